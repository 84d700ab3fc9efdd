"""Generating text: one decoder for greedy search, sampling and beam search, on the KV cache.

The Flax NNX twin of :mod:`taa.torch.generate`, with its names, signatures and defaults.
:func:`decode` is the one implementation, for encoder-decoder and decoder-only models
alike. It wraps the model in a steps object (:mod:`taa.flax.decoding_steps`: the source
encoded once, or the prompt read in one pass; then one token per step on the cache),
sets each row's length limit, and runs one search loop (:mod:`taa.flax.search`): one
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

Speed. A whole search is one compiled program (the first step, then every later step in a
``jax.lax.while_loop`` on a fixed-size KV cache: see :mod:`taa.flax.search`), compiled
once for each shape of the inputs (rows, source or prompt length, longest output), beam
size, stopping rule and sampling setting, then reused by every later call with the same
ones; the limits, the end and padding tokens, the length penalty and the seed are arrays
in the program, and changing them compiles nothing.

Inputs are anything ``jnp.asarray`` takes (numpy arrays, JAX arrays, lists); outputs are
JAX arrays of int32 token ids. The model decodes with dropout off (an evaluation view of
it, ``nnx.with_attributes(model, deterministic=True)``: the model itself keeps its mode).
Sampling draws from a ``jax.random`` key.

Notation: ``b`` sentences (prompts), ``k`` beam size, ``p`` prompt length, ``t`` decoded
tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from taa.decoding import DEFAULTS, HF_EARLY_STOPPING, DecodingConfig, length_penalty
from taa.flax.decoding_steps import DecoderOnlySteps, EncoderDecoderSteps, is_encoder_decoder, max_positions
from taa.flax.search import (
    TOKEN_DTYPE,
    Hypothesis,
    Steps,
    beam_loop,
    decode_loop,
    greedy_choice,
    sampling_choice,
    top_k_filter,
    top_p_filter,
)
from taa.training.dtypes import BFLOAT16, FLOAT32, check_dtype

__all__ = [
    "DEFAULTS", "DEFAULT_NEW_TOKENS", "Decoded", "DecoderOnlySteps", "DecodingConfig", "EncoderDecoderSteps",
    "Hypothesis", "Steps", "beam_search", "decode", "generate", "greedy_decode", "is_encoder_decoder",
    "length_penalty", "resolve_dtype", "sample", "seed_key", "top_k_filter", "top_p_filter",
]

DEFAULT_NEW_TOKENS = 20  # a decoder-only model's new tokens when max_new_tokens is None

JAX_DTYPES = {FLOAT32: jnp.float32, BFLOAT16: jnp.bfloat16}  # taa's dtype names -> JAX's


def resolve_dtype(dtype) -> Optional[jnp.dtype]:
    """``"float32"``/``"bfloat16"`` (or a JAX dtype, or None) -> a JAX dtype or None."""
    if dtype is None:
        return None
    if not isinstance(dtype, str):
        dtype = jnp.dtype(dtype).name
    return jnp.dtype(JAX_DTYPES[check_dtype(dtype)])


def seed_key(seed: int) -> jax.Array:
    """A ``jax.random`` key for a seed of 0 to 2 ** 64 - 1 (taa's range): JAX takes 32-bit
    seeds (without x64), so the high half of the seed is folded into the key of the low half."""
    return jax.random.fold_in(jax.random.key(seed & 0xFFFFFFFF), seed >> 32)


def _decoding_model(model, dtype: Optional[jnp.dtype]):
    """The model as it decodes: dropout off (an evaluation view; the model keeps its mode),
    and with ``dtype`` bfloat16 a copy whose floating-point weights are bfloat16 (every
    layer computes in its input's dtype), as ``model.to(torch.bfloat16)`` is in torch."""
    view = nnx.with_attributes(model, deterministic=True, raise_if_not_found=False)
    if dtype is None or dtype == jnp.float32:
        return view
    graphdef, state = nnx.split(view)
    state = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
    return nnx.merge(graphdef, state)


def _tokens(ids, what: str) -> jax.Array:
    """Token ids as an int32 JAX array."""
    ids = np.asarray(ids)
    if ids.size and ids.dtype.kind not in "iu":
        raise ValueError(f"{what} has dtype {ids.dtype}: token ids are integers")
    return jnp.asarray(ids.astype(np.int32))


def _pad_rows(rows: list[list[int]], pad_id: int) -> jax.Array:
    """(len(rows), longest) token ids, each row padded with ``pad_id``: one copy to the device."""
    longest = max((len(row) for row in rows), default=0)
    padded = np.full((len(rows), longest), pad_id, dtype=np.int32)
    for index, row in enumerate(rows):
        padded[index, : len(row)] = row
    return jnp.asarray(padded)


# --------------------------------------------------------------------------------------
# The one decoder
# --------------------------------------------------------------------------------------


@dataclass
class Decoded:
    """What :func:`decode` returns."""

    prefix: jax.Array  # (b, p) the prompts as given, or (b, 1) an encoder-decoder's start tokens
    tokens: jax.Array  # (b, t) the new tokens: a row's end token included, pad_id after it
    hypotheses: Optional[list[list[Hypothesis]]] = None  # beam search: each row's finished ones, best first

    def sequences(self) -> jax.Array:
        """(b, p + t): the prefix, then the new tokens."""
        return jnp.concatenate([self.prefix, self.tokens], axis=1)


def _steps_and_limits(
    model, input_ids: jax.Array, attention_mask: Optional[np.ndarray], settings: DecodingConfig,
    max_new_tokens: Optional[int], start_id: int,
) -> tuple[Steps, np.ndarray]:
    """The model's steps object, and (b,) the most tokens each row may add (host integers).

    An encoder-decoder's limits come first: the longest of them is the size of its KV cache."""
    batch = input_ids.shape[0]
    if is_encoder_decoder(model):
        padding = (np.asarray(model.source_padding(input_ids)) if attention_mask is None
                   else attention_mask.astype(bool))  # (b, m) True at real tokens
        if max_new_tokens is not None:  # never past the decoder's positions, however many are asked for
            limits = np.full((batch,), min(max_new_tokens, max_positions(model)), dtype=np.int64)
        else:
            limits = padding.sum(axis=1).astype(np.int64) + settings.max_extra  # input length + 50 (§6.1)
            limits = np.clip(limits, 1, max_positions(model))  # the decoder has max_length positions
        capacity = max(int(limits.max()) if batch else 0, 1)
        return EncoderDecoderSteps(model, input_ids, start_id, jnp.asarray(padding), capacity=capacity), limits
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
    input_ids: jax.Array,
    attention_mask: Optional[jax.Array] = None,
    settings: DecodingConfig = DEFAULTS,
    *,
    max_new_tokens: Optional[int] = None,
    start_id: Optional[int] = None,
    end_id: Optional[int] = None,
    pad_id: Optional[int] = None,
    generator: Optional[jax.Array] = None,
    streamer: Optional[Callable[[np.ndarray], None]] = None,
    dtype=None,
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
    - Sampling draws from ``generator`` (a ``jax.random`` key), else from the key of
      ``settings.seed`` (:func:`seed_key`), else from a seed drawn from NumPy's global
      generator (JAX has no global one).
    - ``streamer(tokens)`` receives each step's new tokens (b,), a numpy array, as they are
      chosen (beam search knows its answer only at the end, and streams nothing): it is
      called from inside the compiled loop.
    - ``dtype="bfloat16"`` decodes a float32 model in bfloat16 (a bfloat16 copy of its weights).
    - ``n_best``: how many finished hypotheses beam search keeps per row (at most the beam).
    - ``always_beam``: beam search even with one beam (``settings.beam`` = 1 means greedy
      or sampling otherwise). A beam of one ranks its finished hypotheses by
      log P / lp(Y), so with alpha != 0 it may keep going after the greedy answer ended.
    """
    input_ids = _tokens(input_ids, "input_ids")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}, expected (batch, length)")
    if max_new_tokens is not None and max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    if not 1 <= n_best <= settings.beam:
        raise ValueError(f"n_best={n_best} must be 1 to the beam size {settings.beam}")
    if attention_mask is not None:  # (b, p) on the host: the steps build their arrays from it
        attention_mask = np.asarray(attention_mask)
    config = model.config
    start_id = getattr(config, "bos_id", None) if start_id is None else start_id
    end_id = getattr(config, "eos_id", None) if end_id is None else end_id
    if end_id is not None and end_id < 0:
        end_id = None  # never stop early: the loops keep no book of finished rows
    if pad_id is None:
        pad_id = getattr(config, "pad_id", None)
        pad_id = pad_id if pad_id is not None else (end_id if end_id is not None else 0)
    choose, key = greedy_choice, None
    if settings.sample:
        if generator is not None:
            key = generator
        else:
            key = seed_key(settings.seed if settings.seed is not None else int(np.random.randint(0, 2**63)))
        choose = sampling_choice(settings.temperature, settings.top_k, settings.top_p)

    model = _decoding_model(model, resolve_dtype(dtype))
    steps, limits = _steps_and_limits(model, input_ids, attention_mask, settings, max_new_tokens, start_id)
    prefix = steps.start if is_encoder_decoder(model) else input_ids
    if settings.beam == 1 and not always_beam:
        return Decoded(prefix, decode_loop(steps, limits, choose, end_id, pad_id, streamer, key=key))
    if not bool((limits > 0).any()):
        return Decoded(prefix, jnp.zeros((limits.shape[0], 0), TOKEN_DTYPE))
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
    source: jax.Array,
    max_length: Optional[int] = None,
    start_id: Optional[int] = None,
    end_id: Optional[int] = None,
    *,
    max_extra: int = DEFAULTS.max_extra,
) -> jax.Array:
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
    source: jax.Array,
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
    included, are :func:`taa.flax.search.beam_loop`'s (torch's).
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
    input_ids: jax.Array,
    attention_mask: Optional[jax.Array] = None,
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
    generator: Optional[jax.Array] = None,
    streamer: Optional[Callable[[np.ndarray], None]] = None,
    dtype=None,
) -> jax.Array:
    """Continue prompts (decoder-only) or translate sources (encoder-decoder) with
    transformers' argument names: :func:`decode` with the settings they spell.

    - Greedy when no sampling option is given. ``temperature``, ``top_k`` or ``top_p``
      (or ``do_sample=True``) sample instead, from ``seed`` or ``generator`` (a
      ``jax.random`` key).
    - ``num_beams`` > 1: beam search with lp(Y) = ((5 + |Y|) / 6) ** ``length_penalty``
      (the one default, alpha 0.6). transformers' beam search is
      ``length_penalty_rule="power"`` (lp = |Y| ** alpha; its default alpha is 1.0) with
      its ``early_stopping`` (False, True or "never"); None: the exact bound ("never").
    - ``max_new_tokens``: see :func:`decode`; ``eos_id`` and ``pad_id`` are its
      ``end_id`` and ``pad_id``.
    - ``dtype="bfloat16"`` decodes a float32 model in bfloat16.

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
    input_ids: jax.Array,
    attention_mask: Optional[jax.Array] = None,
    *,
    max_new_tokens: int = DEFAULT_NEW_TOKENS,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    **options,
) -> jax.Array:
    """:func:`generate` that always samples (temperature 1 and no filter by default):
    (b, p) prompts -> (b, p + t). ``options`` are :func:`generate`'s (``generator``,
    ``seed``, ``eos_id``, ``streamer``, ``dtype``, ...)."""
    return generate(
        model, input_ids, attention_mask, max_new_tokens=max_new_tokens, do_sample=True,
        temperature=temperature, top_k=top_k, top_p=top_p, **options,
    )
