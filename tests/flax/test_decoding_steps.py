"""The steps objects on their own, run eagerly: each step's logits are those of the model
run on the whole sequence so far (no cache), rows follow the beams, and a decoder-only
model slides its context past ``max_length``."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from taa import config as cfg  # noqa: E402
from taa.flax.decoding_steps import (  # noqa: E402
    DecoderOnlySteps,
    EncoderDecoderSteps,
    is_encoder_decoder,
    max_positions,
)

VOCAB, PAD, BOS = 16, 0, 1


def evaluation(model):
    return nnx.with_attributes(model, deterministic=True, raise_if_not_found=False)


def close(ours, theirs) -> None:
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-5, rtol=0)


def test_decoder_only_steps_give_the_logits_of_the_whole_sequence() -> None:
    from taa.flax.models.gpt import GPT

    model = evaluation(GPT(cfg.preset("gpt-tiny", vocab_size=VOCAB, max_length=16), rngs=nnx.Rngs(0)))
    assert not is_encoder_decoder(model) and max_positions(model) == 16
    ids = np.array([[PAD, PAD, 5, 6], [7, 8, 9, 10]], dtype=np.int32)  # left-padded prompts
    mask = (ids != PAD).astype(np.int32)
    steps = DecoderOnlySteps(model, ids, mask, 3)
    close(steps.next_logits(None), model(ids, mask)[:, -1])
    for new in ([11, 12], [13, 3]):
        last = jnp.asarray(new, jnp.int32)
        ids, mask = np.concatenate([ids, np.array(new)[:, None]], 1), np.concatenate([mask, [[1], [1]]], 1)
        close(steps.next_logits(last), model(ids, mask)[:, -1])
    steps.follow(jnp.array([1, 1]), False)  # both rows continue the second one
    ids, mask = np.repeat(ids[1:], 2, 0), np.repeat(mask[1:], 2, 0)
    last = jnp.asarray([4, 14], jnp.int32)
    ids, mask = np.concatenate([ids, np.array([[4], [14]])], 1), np.concatenate([mask, [[1], [1]]], 1)
    close(steps.next_logits(last), model(ids, mask)[:, -1])


def test_decoder_only_steps_slide_past_the_context() -> None:
    from taa.flax.models.gpt import GPT

    model = evaluation(GPT(cfg.preset("gpt-tiny", vocab_size=VOCAB, max_length=4), rngs=nnx.Rngs(1)))
    ids = np.array([[3, 4, 5]], dtype=np.int32)
    steps = DecoderOnlySteps(model, ids, None, 4)
    assert steps.slides
    close(steps.next_logits(None), model(ids)[:, -1])
    for token in (6, 7, 8):  # the fourth token fills the context; then the last 4 are read again
        ids = np.concatenate([ids, [[token]]], 1)
        close(steps.next_logits(jnp.asarray([token], jnp.int32)), model(ids[:, -4:])[:, -1])


def test_encoder_decoder_steps_give_the_logits_of_the_whole_target() -> None:
    from taa.flax.models.transformer import Transformer

    config = cfg.TransformerConfig(
        d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=2, source_vocab_size=VOCAB,
        target_vocab_size=VOCAB, max_length=16, share_embeddings=False, tie_output=False, pad_id=PAD, bos_id=BOS,
    )
    model = evaluation(Transformer(config, rngs=nnx.Rngs(0)))
    assert is_encoder_decoder(model)
    source = np.array([[5, 6, 7], [8, 9, PAD]], dtype=np.int32)
    steps = EncoderDecoderSteps(model, source, BOS, capacity=4)
    steps.repeat_rows(2)  # (sentence, beam) rows: 0, 0, 1, 1
    source, padding = np.repeat(source, 2, 0), np.repeat(source != PAD, 2, 0)
    memory = model.encode(source, padding)
    target = np.full((4, 1), BOS, dtype=np.int32)
    close(steps.next_logits(None), model.decode(target, memory, padding)[:, -1])
    for new, rows in (([3, 4, 5, 6], [1, 0, 3, 3]), ([7, 8, 9, 10], [0, 0, 2, 3])):
        steps.follow(jnp.asarray(rows, jnp.int32), False)  # beams trade places within their sentence
        target = np.concatenate([target[rows], np.array(new)[:, None]], 1)
        close(steps.next_logits(jnp.asarray(new, jnp.int32)), model.decode(target, memory, padding)[:, -1])
