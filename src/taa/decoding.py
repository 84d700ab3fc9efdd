"""Decoding settings, the length penalty, and the defaults a checkpoint carries.

Framework-neutral: every framework's decoder (``taa.torch.generate``) reads the same
:class:`DecodingConfig` and ranks beams with the same :func:`length_penalty`. This
module imports no framework.

The length penalty of GNMT (Wu et al. 2016, equation 14), which "Attention Is All You
Need" uses with alpha = 0.6 (§6.1)::

    lp(Y) = ((5 + |Y|) / 6) ** alpha        score(Y) = log P(Y | X) / lp(Y)

is the one default of every entry point (``taa translate``, ``taa evaluate``,
``taa generate``, :func:`~taa.torch.generate.generate`, ``beam_search``). Hugging Face's
``generate`` divides by ``|Y| ** alpha`` instead (fairseq too); the ``"power"`` rule
gives that, so a Hugging Face checkpoint decodes as transformers decodes it.

|Y| counts the tokens after the start token (or after the prompt), the end token included.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from taa.folders import HF_GENERATION_CONFIG

# lp(Y) by rule name; alpha = 0 turns either off (lp = 1).
LENGTH_PENALTY_RULES = ("gnmt", "power")
# When beam search declares a sentence done (see taa.torch.search.beam_loop):
# - "exact": no live beam can still beat the best finished one (tensor2tensor's bound,
#   the beam search the paper used; never changes the answer);
# - "current_length": Hugging Face's early_stopping=False (a bound from the current length);
# - "k_finished": Hugging Face's early_stopping=True (k hypotheses are finished).
STOPPING_RULES = ("exact", "current_length", "k_finished")
# Hugging Face's ``early_stopping`` -> the same rule here.
HF_EARLY_STOPPING = {"never": "exact", False: "current_length", True: "k_finished"}
# What a person may ask of the decoder (taa translate, evaluate, generate):
# - at most MAX_BEAM beams: each keeps its own copy of the source's encoding and of the KV
#   cache, so a beam of millions asks for more memory than a machine has, and published
#   systems use 4 to 10;
# - a length penalty alpha of at most MAX_LENGTH_PENALTY: the paper's is 0.6, Hugging Face
#   models' 0.6 to 2; far larger ranks by length alone, and past about 50 lp(Y) of a long
#   output is more than a float holds;
# - a seed below SEED_LIMIT: a torch.Generator takes 0 to 2 ** 64 - 1.
MAX_BEAM = 64
MAX_LENGTH_PENALTY = 10.0
SEED_LIMIT = 2**64


def length_penalty(length, alpha: float, rule: str = "gnmt"):
    """lp(Y) of a hypothesis of ``length`` tokens (an int, or an array of lengths).

    ``"gnmt"``: ((5 + |Y|) / 6) ** alpha (GNMT eq. 14, the paper's §6.1);
    ``"power"``: |Y| ** alpha (Hugging Face's and fairseq's ``length_penalty``).
    """
    if rule == "gnmt":
        return ((5 + length) / 6) ** alpha
    if rule == "power":
        return length**alpha
    raise ValueError(f"length_penalty_rule={rule!r} is not one of {', '.join(LENGTH_PENALTY_RULES)}")


@dataclass(frozen=True)
class DecodingConfig:
    """How to choose the output tokens: greedy, sampled, or by beam search.

    ``beam`` > 1 runs beam search ranked by log P / lp(Y); ``beam`` = 1 takes one token
    per step: the most likely one, or (``sample``) one drawn from softmax(logits /
    temperature) restricted to the top-k tokens, then to the nucleus of probability
    top-p (Fan et al. 2018, §5.4; Holtzman et al. 2020, §3.1).
    """

    beam: int = 1  # beam size; 1: one token per step
    length_penalty: float = 0.6  # alpha of lp(Y) (paper §6.1: 0.6)
    length_penalty_rule: str = "gnmt"  # "gnmt": ((5 + |Y|) / 6) ** alpha; "power": |Y| ** alpha
    stopping: str = "exact"  # when beam search declares a sentence done (STOPPING_RULES)
    max_extra: int = 50  # an encoder-decoder decodes up to source length + max_extra tokens (paper §6.1: 50)
    sample: bool = False  # draw each token instead of taking the most likely one
    temperature: float = 1.0  # sampling: softmax(logits / temperature)
    top_k: Optional[int] = None  # sampling: only among the k most likely tokens; None: all
    top_p: Optional[float] = None  # sampling: only from the nucleus of probability p; None: all
    seed: Optional[int] = None  # sampling: the generator's seed; None: torch's global generator

    def __post_init__(self) -> None:
        if self.beam < 1:
            raise ValueError(f"beam={self.beam} must be >= 1")
        if not math.isfinite(self.length_penalty):
            raise ValueError(f"length_penalty={self.length_penalty} must be a finite number")
        if self.length_penalty_rule not in LENGTH_PENALTY_RULES:
            raise ValueError(
                f"length_penalty_rule={self.length_penalty_rule!r} is not one of {', '.join(LENGTH_PENALTY_RULES)}"
            )
        if self.stopping not in STOPPING_RULES:
            raise ValueError(f"stopping={self.stopping!r} is not one of {', '.join(STOPPING_RULES)}")
        if self.max_extra < 0:
            raise ValueError(f"max_extra={self.max_extra} must be >= 0")
        if self.sample and self.beam > 1:
            raise ValueError("beam search with sampling is not supported: use beam 1 to sample")
        if not 0 < self.temperature < math.inf:  # (nan too)
            raise ValueError(f"temperature={self.temperature} must be a positive finite number "
                             "(leave it out for greedy decoding)")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k} must be >= 1")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.seed is not None and not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed={self.seed} must be 0 to 2 ** 64 - 1")

    def replace(self, **changes: Any) -> DecodingConfig:
        """A copy with ``changes``; a change of None keeps the value (an option not given)."""
        return dataclasses.replace(self, **{name: value for name, value in changes.items() if value is not None})


DEFAULTS = DecodingConfig()

# Hugging Face's GenerationConfig defaults, for the fields read from generation_config.json.
HF_GENERATION_DEFAULTS = {
    "num_beams": 1, "length_penalty": 1.0, "early_stopping": False,
    "do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0,
}


def _from_recipe(recipe) -> DecodingConfig:
    """A training run's settings: its data section's beam search (translation, text-to-text)
    or its sample (language model), whichever fields the task's data config has."""
    data, settings = recipe.data, DEFAULTS
    if all(hasattr(data, name) for name in ("beam", "length_penalty", "max_extra")):
        settings = settings.replace(beam=data.beam, length_penalty=data.length_penalty, max_extra=data.max_extra)
    if all(hasattr(data, name) for name in ("temperature", "top_k")):  # the run's text sample
        settings = settings.replace(sample=True, temperature=data.temperature, top_k=data.top_k or None,
                                    seed=recipe.train.seed)
    return settings


def _from_hugging_face(folder: Path) -> DecodingConfig:
    """A Hugging Face folder decodes as transformers would: |Y| ** alpha, its
    ``early_stopping``, and what its generation_config.json sets."""
    path = folder / HF_GENERATION_CONFIG
    stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    given = {name: value for name, value in stored.items() if name in HF_GENERATION_DEFAULTS and value is not None}
    hf = {**HF_GENERATION_DEFAULTS, **given}
    sample = bool(hf["do_sample"]) and int(hf["num_beams"]) == 1
    return DEFAULTS.replace(
        beam=int(hf["num_beams"]), length_penalty=float(hf["length_penalty"]), length_penalty_rule="power",
        stopping=HF_EARLY_STOPPING.get(hf["early_stopping"], "current_length"), sample=sample,
        **({"temperature": float(hf["temperature"]), "top_k": int(hf["top_k"]) or None,
            "top_p": float(hf["top_p"]) if hf["top_p"] < 1.0 else None} if sample else {}),
    )


def decoding_defaults(checkpoint) -> DecodingConfig:
    """The decoding settings ``checkpoint`` carries: what ``taa translate``, ``taa evaluate``
    and ``taa generate`` use for every option not given.

    ``checkpoint`` is a :class:`~taa.config.RecipeConfig`, or what ``from_pretrained``
    returns (anything with ``recipe``, ``source`` and ``folder``):

    - a training run: its recipe's ``data.beam``, ``data.length_penalty`` and
      ``data.max_extra`` (translation, text-to-text: the settings of the run's test
      BLEU), or its sample's ``data.temperature``, ``data.top_k`` and ``train.seed``
      (a language model: the settings of the run's text sample);
    - a Hugging Face folder: transformers' rules (see :func:`_from_hugging_face`);
    - anything else: :data:`DEFAULTS` (greedy; beam search with GNMT's lp, alpha 0.6).
    """
    recipe = checkpoint if hasattr(checkpoint, "data") and hasattr(checkpoint, "train") else getattr(
        checkpoint, "recipe", None)
    if recipe is not None:
        return _from_recipe(recipe)
    if getattr(checkpoint, "source", None) == "hugging_face":
        return _from_hugging_face(Path(checkpoint.folder))
    return DEFAULTS
