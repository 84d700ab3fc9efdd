"""Generating text: one decoder for greedy search, sampling and beam search, on the KV cache.

The Keras twin of :mod:`taa.torch.generate`, with its names, signatures and defaults.
:func:`decode` is the one implementation, for encoder-decoder and decoder-only models
alike. It wraps the model in a steps object (:mod:`taa.keras.decoding_steps`: the source
encoded once, or the prompt read in one pass; then one token per step on the cache),
sets each row's length limit, and runs one search loop (:mod:`taa.keras.search`): one
token per step, the most likely or a sampled one, or beam search ranked by
log P(Y | X) / lp(Y). What to do is one :class:`~taa.decoding.DecodingConfig`, and lp is
the one :func:`~taa.decoding.length_penalty`: GNMT's ((5 + |Y|) / 6) ** alpha with the
paper's alpha = 0.6 unless a rule or an alpha is given.

The other entry points are thin wrappers with their own argument names:

- :func:`greedy_decode` and :func:`beam_search`: an encoder-decoder's sources, the
  paper's conventions (§6.1):

      "we used beam search with a beam size of 4 and length penalty alpha = 0.6 [...] We
      set the maximum output length during inference to input length + 50, but terminate
      early when possible."

- :func:`generate` and :func:`sample`: transformers' ``model.generate`` argument names,
  for decoder-only models and encoder-decoders.

Lengths. A hypothesis is counted in tokens after the start token (or after the prompt),
the end token included. ``max_new_tokens`` is the most tokens a row may add; with None an
encoder-decoder's sentence may take ``source length + max_extra`` tokens (its non-padding
source tokens; the paper's +50). Either way an encoder-decoder stops at its decoder's
``max_length`` positions. A decoder-only model adds :data:`DEFAULT_NEW_TOKENS` by default.
``max_length`` of :func:`greedy_decode` and :func:`beam_search` counts the start token too:
``max_new_tokens = max_length - 1``.

Inputs are anything ``keras.ops.convert_to_tensor`` takes (numpy arrays, backend
tensors); outputs are backend tensors of int32 token ids. Dropout is off (the layers run
with ``training`` unset). Sampling draws from a ``keras.random.SeedGenerator``.

Notation: ``b`` sentences (prompts), ``k`` beam size, ``p`` prompt length, ``t`` decoded
tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np
from keras import ops

from taa.decoding import DEFAULTS, HF_EARLY_STOPPING, DecodingConfig, length_penalty
from taa.keras.decoding_steps import DecoderOnlySteps, EncoderDecoderSteps, is_encoder_decoder, max_positions
from taa.keras.search import (
    TOKEN_DTYPE,
    Hypothesis,
    Steps,
    Tensor,
    beam_loop,
    decode_loop,
    greedy_choice,
    sampling_choice,
    top_k_filter,
    top_p_filter,
)
from taa.training.dtypes import check_dtype

__all__ = [
    "DEFAULTS", "DEFAULT_NEW_TOKENS", "Decoded", "DecoderOnlySteps", "DecodingConfig", "EncoderDecoderSteps",
    "Hypothesis", "Steps", "beam_search", "decode", "generate", "greedy_decode", "is_encoder_decoder",
    "length_penalty", "resolve_dtype", "sample", "seed_generator", "top_k_filter", "top_p_filter",
]

DEFAULT_NEW_TOKENS = 20  # a decoder-only model's new tokens when max_new_tokens is None


def resolve_dtype(dtype: Optional[str]) -> Optional[str]:
    """``"float32"``/``"bfloat16"`` (or None) -> the Keras dtype name, or None."""
    return None if dtype is None else check_dtype(str(dtype))


def _check_compute_dtype(model, dtype: Optional[str]) -> None:
    """The model computes in its own dtype policy: ``dtype`` must be that one (Keras has no
    autocast of a built model; build it with ``dtype="bfloat16"`` to decode in bfloat16)."""
    computes = getattr(model, "compute_dtype", "float32")
    if dtype is not None and dtype != computes:
        raise ValueError(f"dtype={dtype!r}: this Keras model computes in {computes} (build it in {dtype} instead)")


def seed_generator(seed: int) -> keras.random.SeedGenerator:
    """A ``keras.random.SeedGenerator`` for a seed of 0 to 2 ** 64 - 1 (taa's range); Keras
    seeds are 32-bit on the jax backend, so the two halves of the seed are folded into one."""
    return keras.random.SeedGenerator((seed ^ (seed >> 32)) & 0xFFFFFFFF)


def _tokens(ids, what: str) -> Tensor:
    """Token ids as an int32 backend tensor."""
    if not ops.is_tensor(ids):  # a list or a numpy array: int32 on the host, one copy to the device
        ids = np.asarray(ids)
        if ids.size and ids.dtype.kind not in "iu":
            raise ValueError(f"{what} has dtype {ids.dtype}: token ids are integers")
        return ops.convert_to_tensor(ids.astype(np.int32))
    if "int" not in str(ids.dtype):
        raise ValueError(f"{what} has dtype {ids.dtype}: token ids are integers")
    return ops.cast(ids, TOKEN_DTYPE)


def _pad_rows(rows: list[list[int]], pad_id: int) -> Tensor:
    """(len(rows), longest) token ids, each row padded with ``pad_id``: one copy to the device."""
    longest = max((len(row) for row in rows), default=0)
    padded = np.full((len(rows), longest), pad_id, dtype=np.int32)
    for index, row in enumerate(rows):
        padded[index, : len(row)] = row
    return ops.convert_to_tensor(padded)


# --------------------------------------------------------------------------------------
# The one decoder
# --------------------------------------------------------------------------------------


@dataclass
class Decoded:
    """What :func:`decode` returns."""

    prefix: Tensor  # (b, p) the prompts as given, or (b, 1) an encoder-decoder's start tokens
    tokens: Tensor  # (b, t) the new tokens: a row's end token included, pad_id after it
    hypotheses: Optional[list[list[Hypothesis]]] = None  # beam search: each row's finished ones, best first

    def sequences(self) -> Tensor:
        """(b, p + t): the prefix, then the new tokens."""
        return ops.concatenate([self.prefix, self.tokens], axis=1)


def _steps_and_limits(
    model, input_ids: Tensor, attention_mask: Optional[Tensor], settings: DecodingConfig,
    max_new_tokens: Optional[int], start_id: int,
) -> tuple[Steps, np.ndarray]:
    """The model's steps object, and (b,) the most tokens each row may add (host integers)."""
    batch = input_ids.shape[0]
    if is_encoder_decoder(model):
        steps = EncoderDecoderSteps(model, input_ids, start_id, attention_mask)
        if max_new_tokens is not None:  # never past the decoder's positions, however many are asked for
            return steps, np.full((batch,), min(max_new_tokens, max_positions(model)), dtype=np.int64)
        lengths = ops.convert_to_numpy(ops.sum(ops.cast(steps.source_padding, "int32"), axis=1))
        limits = lengths.astype(np.int64) + settings.max_extra  # input length + 50 (§6.1)
        return steps, np.clip(limits, 1, max_positions(model))  # the decoder has max_length positions
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(input_ids.shape)}")
    if input_ids.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token (e.g. the start token)")
    new_tokens = DEFAULT_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    steps = DecoderOnlySteps(model, input_ids, attention_mask, new_tokens)
    if settings.beam > 1 and steps.slides:
        raise ValueError(
            f"a prompt of {input_ids.shape[1]} tokens + {new_tokens} new tokens exceeds the model's "
            f"context of max_length={steps.max_positions} (beam search does not slide the context)"
        )
    return steps, np.full((batch,), new_tokens, dtype=np.int64)


def decode(
    model,
    input_ids: Tensor,
    attention_mask: Optional[Tensor] = None,
    settings: DecodingConfig = DEFAULTS,
    *,
    max_new_tokens: Optional[int] = None,
    start_id: Optional[int] = None,
    end_id: Optional[int] = None,
    pad_id: Optional[int] = None,
    generator: Optional[keras.random.SeedGenerator] = None,
    streamer: Optional[Callable[[Tensor], None]] = None,
    dtype: Optional[str] = None,
    n_best: int = 1,
    always_beam: bool = False,
) -> Decoded:
    """Decode a batch as ``settings`` says: greedy, sampled, or by beam search.

    - ``input_ids`` (b, p): an encoder-decoder's sources, padded with ``pad_id`` (or
      ``attention_mask`` 1 at real tokens); or a decoder-only model's prompts,
      left-padded with ``attention_mask`` (b, p) 1 at real tokens.
    - ``max_new_tokens``: the most tokens a row adds (None: see the module's "Lengths").
    - ``start_id``, ``end_id``, ``pad_id``: default to the config's ``bos_id``, ``eos_id``
      and ``pad_id``. A negative ``end_id`` (or a config without one) never ends a row;
      without a ``pad_id`` the end token pads, as transformers does.
    - Sampling draws from ``generator`` (a ``keras.random.SeedGenerator``), else from one
      seeded with ``settings.seed``, else from Keras's global one.
    - ``streamer(tokens)`` receives each step's new tokens (b,) as they are chosen (beam
      search knows its answer only at the end, and streams nothing).
    - ``dtype``: None or the model's own compute dtype (a Keras model is built in the
      dtype it decodes in).
    - ``n_best``: how many finished hypotheses beam search keeps per row (at most the beam).
    - ``always_beam``: beam search even with one beam (``settings.beam`` = 1 means greedy
      or sampling otherwise).
    """
    input_ids = _tokens(input_ids, "input_ids")
    if len(input_ids.shape) != 2:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}, expected (batch, length)")
    if max_new_tokens is not None and max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    if not 1 <= n_best <= settings.beam:
        raise ValueError(f"n_best={n_best} must be 1 to the beam size {settings.beam}")
    if attention_mask is not None:  # (b, p) True at real tokens
        attention_mask = (ops.cast(attention_mask, "bool") if ops.is_tensor(attention_mask)
                          else ops.convert_to_tensor(np.asarray(attention_mask).astype(bool)))
    _check_compute_dtype(model, resolve_dtype(dtype))
    config = model.config
    start_id = getattr(config, "bos_id", None) if start_id is None else start_id
    end_id = getattr(config, "eos_id", None) if end_id is None else end_id
    if end_id is not None and end_id < 0:
        end_id = None  # never stop early: the loops keep no book of finished rows
    if pad_id is None:
        pad_id = getattr(config, "pad_id", None)
        pad_id = pad_id if pad_id is not None else (end_id if end_id is not None else 0)
    choose = greedy_choice
    if settings.sample:
        if generator is None and settings.seed is not None:
            generator = seed_generator(settings.seed)
        choose = sampling_choice(settings.temperature, settings.top_k, settings.top_p, generator)

    steps, limits = _steps_and_limits(model, input_ids, attention_mask, settings, max_new_tokens, start_id)
    prefix = steps.start if is_encoder_decoder(model) else input_ids
    if settings.beam == 1 and not always_beam:
        return Decoded(prefix, decode_loop(steps, limits, choose, end_id, pad_id, streamer))
    if not bool((limits > 0).any()):
        return Decoded(prefix, ops.zeros((limits.shape[0], 0), dtype=TOKEN_DTYPE))
    steps.repeat_rows(settings.beam)
    results = beam_loop(
        steps, limits, settings.beam, end_id, pad_id, settings.length_penalty,
        settings.length_penalty_rule, settings.stopping, n_best=n_best,
    )
    best = [hypotheses[0] for hypotheses in results]
    tokens = _pad_rows([h.tokens + ([end_id] if h.ended else []) for h in best], pad_id)
    return Decoded(prefix, tokens, results)


# --------------------------------------------------------------------------------------
# Entry points: the paper's greedy and beam search, transformers' generate
# --------------------------------------------------------------------------------------


def greedy_decode(
    model,
    source: Tensor,
    max_length: Optional[int] = None,
    start_id: Optional[int] = None,
    end_id: Optional[int] = None,
    *,
    max_extra: int = DEFAULTS.max_extra,
) -> Tensor:
    """Batched greedy decoding of an encoder-decoder: (b, m) -> (b, <= 1 + longest), start token first.

    Each step appends every sentence's most likely next token. After a sentence emits
    ``end_id``, or reaches its length limit, it is padded with ``pad_id``; decoding
    stops once every sentence has ended. ``start_id``/``end_id`` default to the
    config's ``bos_id``/``eos_id`` (``end_id=-1`` never ends: decode to the limit).
    """
    new_tokens = None if max_length is None else max_length - 1
    settings = DEFAULTS.replace(max_extra=max_extra)
    return decode(model, source, None, settings, max_new_tokens=new_tokens, start_id=start_id,
                  end_id=end_id).sequences()


def beam_search(
    model,
    source: Tensor,
    beam_size: int = 4,
    max_length: Optional[int] = None,
    max_extra: int = DEFAULTS.max_extra,
    length_penalty: float = DEFAULTS.length_penalty,
    start_id: Optional[int] = None,
    end_id: Optional[int] = None,
    *,
    return_all: bool = False,
    length_penalty_rule: str = DEFAULTS.length_penalty_rule,
    stopping: str = DEFAULTS.stopping,
) -> list[list[int]] | list[list[Hypothesis]]:
    """Beam search over a batch of an encoder-decoder's source sentences (b, m), padded with ``pad_id``.

    Returns the best hypothesis of each sentence as token ids, without the start and
    the end token (ready for a tokenizer's ``decode``); with ``return_all``, each
    sentence's finished :class:`Hypothesis` list instead (up to ``beam_size``, best
    first, with scores). ``length_penalty`` is the alpha of lp(Y) (GNMT's, or |Y| ** alpha
    with ``length_penalty_rule="power"``); 0: rank by log P alone. The rules, stopping
    included, are :func:`taa.keras.search.beam_loop`'s.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size={beam_size} must be >= 1")
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length={max_length} leaves no room to decode (it counts the start token)")
    settings = DecodingConfig(beam=beam_size, length_penalty=length_penalty, length_penalty_rule=length_penalty_rule,
                              stopping=stopping, max_extra=max_extra)
    decoded = decode(model, source, None, settings, max_new_tokens=None if max_length is None else max_length - 1,
                     start_id=start_id, end_id=end_id, n_best=beam_size if return_all else 1, always_beam=True)
    if return_all:
        return decoded.hypotheses
    return [hypotheses[0].tokens for hypotheses in decoded.hypotheses]


def generate(
    model,
    input_ids: Tensor,
    attention_mask: Optional[Tensor] = None,
    *,
    max_new_tokens: Optional[int] = None,
    do_sample: Optional[bool] = None,
    temperature: Optional[float] = None,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    num_beams: int = 1,
    length_penalty: float = DEFAULTS.length_penalty,
    length_penalty_rule: str = DEFAULTS.length_penalty_rule,
    early_stopping: bool | str | None = None,
    max_extra: int = DEFAULTS.max_extra,
    eos_id: Optional[int] = None,
    pad_id: Optional[int] = None,
    seed: Optional[int] = None,
    generator: Optional[keras.random.SeedGenerator] = None,
    streamer: Optional[Callable[[Tensor], None]] = None,
    dtype: Optional[str] = None,
) -> Tensor:
    """Continue prompts (decoder-only) or translate sources (encoder-decoder) with
    transformers' argument names: :func:`decode` with the settings they spell.

    - Greedy when no sampling option is given. ``temperature``, ``top_k`` or ``top_p``
      (or ``do_sample=True``) sample instead, from ``seed`` or ``generator``.
    - ``num_beams`` > 1: beam search with lp(Y) = ((5 + |Y|) / 6) ** ``length_penalty``
      (the one default, alpha 0.6). transformers' beam search is
      ``length_penalty_rule="power"`` (lp = |Y| ** alpha; its default alpha is 1.0) with
      its ``early_stopping`` (False, True or "never"); None: the exact bound ("never").
    - ``max_new_tokens``: see :func:`decode`; ``eos_id`` and ``pad_id`` are its
      ``end_id`` and ``pad_id``.

    Returns (b, p + t) for a decoder-only model: the prompts (as given, padding included)
    then the new tokens; (b, 1 + t) for an encoder-decoder: its start token, then the new
    tokens. Finished rows are padded to the longest.
    """
    if num_beams < 1:
        raise ValueError(f"num_beams={num_beams} must be >= 1")
    stopping = DEFAULTS.stopping if early_stopping is None else HF_EARLY_STOPPING.get(early_stopping)
    if stopping is None:
        raise ValueError(f"early_stopping={early_stopping!r} is not one of True, False, 'never'")
    sampling = do_sample if do_sample is not None else any(x is not None for x in (temperature, top_k, top_p))
    settings = DecodingConfig(
        beam=num_beams, length_penalty=length_penalty, length_penalty_rule=length_penalty_rule, stopping=stopping,
        max_extra=max_extra, sample=bool(sampling), temperature=1.0 if temperature is None else temperature,
        top_k=top_k, top_p=top_p, seed=seed,
    )
    decoded = decode(model, input_ids, attention_mask, settings, max_new_tokens=max_new_tokens, end_id=eos_id,
                     pad_id=pad_id, generator=generator, streamer=streamer, dtype=dtype)
    return decoded.sequences()


def sample(
    model,
    input_ids: Tensor,
    attention_mask: Optional[Tensor] = None,
    *,
    max_new_tokens: int = DEFAULT_NEW_TOKENS,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    **options,
) -> Tensor:
    """:func:`generate` that always samples (temperature 1 and no filter by default):
    (b, p) prompts -> (b, p + t). ``options`` are :func:`generate`'s (``generator``,
    ``seed``, ``eos_id``, ``streamer``, ...)."""
    return generate(
        model, input_ids, attention_mask, max_new_tokens=max_new_tokens, do_sample=True,
        temperature=temperature, top_k=top_k, top_p=top_p, **options,
    )
