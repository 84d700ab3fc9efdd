"""The whole encoder-decoder Transformer: torch.nn equivalence, masking properties, KV-cache decoding."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from taa.config import TransformerConfig, preset
from taa.torch.attention import capture_attention, causal_mask
from taa.torch.convert.state_dict import load_checked
from taa.torch.convert.torch_nn import from_torch_nn
from taa.torch.models.transformer import Transformer

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning"),
    pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning"),
]

VOCAB, PAD, BOS, EOS = 23, 0, 1, 2
POSITIONALS = ["sinusoidal", "learned", "rotary", "relative"]


def tiny_config(**overrides) -> TransformerConfig:
    fields = dict(
        d_model=16, n_heads=4, d_ff=32, dropout=0.0, n_encoder_layers=2, n_decoder_layers=2,
        source_vocab_size=VOCAB, target_vocab_size=VOCAB, max_length=32,
        relative_buckets=8, relative_max_distance=16, pad_id=PAD, bos_id=BOS, eos_id=EOS,
    )
    return TransformerConfig(**{**fields, **overrides})


def perturb_vectors(model: nn.Module, seed: int) -> nn.Module:
    """Freshly made models have zero biases and unit norms: perturb them so they count."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model


@functools.cache
def tiny_model(positional: str = "sinusoidal", norm_first: bool = False, n_kv_heads: int | None = None) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(tiny_config(positional=positional, norm_first=norm_first, n_kv_heads=n_kv_heads))
    return perturb_vectors(model, 1).eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def random_tokens(generator: torch.Generator, lengths: list[int], width: int, start: int | None = None) -> torch.Tensor:
    """(b, width) real tokens (never PAD) up to each length, PAD after."""
    tokens = torch.randint(1, VOCAB, (len(lengths), width), generator=generator)
    if start is not None:
        tokens[:, 0] = start
    for row, length in enumerate(lengths):
        tokens[row, length:] = PAD
    return tokens


# --------------------------------------------------------------------------------------
# Equivalence with torch.nn.Transformer
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "activation,norm_first", [("relu", False), ("gelu", False), ("relu", True), ("gelu", True)]
)
def test_matches_torch_nn_transformer(activation: str, norm_first: bool) -> None:
    config = tiny_config(activation=activation, norm_first=norm_first, final_norm=True)
    torch.manual_seed(2)
    reference = nn.Transformer(
        config.d_model, config.n_heads, config.n_encoder_layers, config.n_decoder_layers, config.d_ff,
        dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first,
    )
    perturb_vectors(reference, 3).eval()
    model = Transformer(config).eval()
    state = model.state_dict()
    state.update(from_torch_nn(reference.state_dict(), config.n_encoder_layers, config.n_decoder_layers))
    load_checked(model, state, "taa Transformer")

    generator = torch.Generator().manual_seed(4)
    source = random_tokens(generator, [9, 5, 2], 9)
    target = random_tokens(generator, [6, 3, 6], 6, start=BOS)
    with torch.no_grad():
        logits = model(source, target)

        def embed(embedding, ids):
            return model.source_positions(embedding(ids) * math.sqrt(config.d_model))

        hidden = reference(
            embed(model.source_embedding, source),
            embed(model.target_embedding, target),
            tgt_mask=~causal_mask(6),
            src_key_padding_mask=source == PAD,
            tgt_key_padding_mask=target == PAD,
            memory_key_padding_mask=source == PAD,
        )
        expected = hidden @ model.target_embedding.weight.T  # tied output projection
    assert logits.shape == (3, 6, VOCAB)
    assert max_diff(logits, expected) <= 1e-5


def test_final_norm_defaults_follow_norm_first() -> None:
    assert Transformer(tiny_config(norm_first=False)).encoder.final_norm is None
    assert Transformer(tiny_config(norm_first=True)).decoder.final_norm is not None
    assert Transformer(tiny_config(final_norm=True)).encoder.final_norm is not None


# --------------------------------------------------------------------------------------
# Masking properties
# --------------------------------------------------------------------------------------

MODEL_KINDS = [
    pytest.param(positional, norm_first, id=f"{positional}-{'pre' if norm_first else 'post'}")
    for positional in POSITIONALS
    for norm_first in (False, True)
]


@pytest.mark.parametrize("positional,norm_first", MODEL_KINDS)
@settings(max_examples=25, deadline=None)
@given(
    source_lengths=st.lists(st.integers(1, 7), min_size=1, max_size=3),
    target_length=st.integers(1, 7),
    extra_source=st.integers(0, 4),
    extra_target=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_appended_padding_changes_no_output(
    positional, norm_first, source_lengths, target_length, extra_source, extra_target, seed
) -> None:
    model = tiny_model(positional, norm_first)
    generator = torch.Generator().manual_seed(seed)
    batch, width = len(source_lengths), max(source_lengths)
    source = random_tokens(generator, source_lengths, width)
    target = random_tokens(generator, [target_length] * batch, target_length, start=BOS)
    padded_source = torch.cat([source, torch.full((batch, extra_source), PAD)], dim=1)
    padded_target = torch.cat([target, torch.full((batch, extra_target), PAD)], dim=1)
    with torch.no_grad():
        expected = model(source, target)
        padded = model(padded_source, padded_target)
    assert padded.shape == (batch, target_length + extra_target, VOCAB)
    assert max_diff(padded[:, :target_length], expected) <= 1e-5


@pytest.mark.parametrize("positional,norm_first", MODEL_KINDS)
@settings(max_examples=25, deadline=None)
@given(
    source_length=st.integers(1, 7),
    target_length=st.integers(2, 8),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_decoder_outputs_never_see_later_target_tokens(positional, norm_first, source_length, target_length, data, seed):
    t = data.draw(st.integers(0, target_length - 2), label="t")
    model = tiny_model(positional, norm_first)
    generator = torch.Generator().manual_seed(seed)
    source = random_tokens(generator, [source_length, max(1, source_length - 2)], source_length)
    target = random_tokens(generator, [target_length] * 2, target_length, start=BOS)
    changed = target.clone()
    changed[:, t + 1 :] = torch.randint(0, VOCAB, (2, target_length - t - 1), generator=generator)  # pads too
    with torch.no_grad():
        before = model(source, target)
        after = model(source, changed)
    assert max_diff(before[:, : t + 1], after[:, : t + 1]) <= 1e-5


def test_padding_mask_is_not_a_no_op() -> None:
    """Guard for the property above: without the mask the padding would leak in."""
    model = tiny_model()
    source = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[5, 6, 7, PAD, PAD]])
    target = torch.tensor([[BOS, 4]])
    with torch.no_grad():
        memory = model.encode(padded, torch.ones_like(padded, dtype=torch.bool))  # pads treated as real
        leaky = model.decode(target, memory, torch.ones_like(padded, dtype=torch.bool))
        assert max_diff(leaky, model(source, target)) > 1e-3
        assert max_diff(model(padded, target), model(source, target)) <= 1e-5


# --------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_kv_heads", [None, 2], ids=["mha", "gqa"])
@pytest.mark.parametrize("positional,norm_first", MODEL_KINDS)
@pytest.mark.parametrize("chunks", [[1] * 7, [3, 1, 3]], ids=["tokens", "chunks"])
def test_cached_decoding_equals_full_decoding(positional, norm_first, n_kv_heads, chunks) -> None:
    model = tiny_model(positional, norm_first, n_kv_heads)
    generator = torch.Generator().manual_seed(5)
    source = random_tokens(generator, [6, 3], 6)
    target = random_tokens(generator, [7, 7], 7, start=BOS)
    with torch.no_grad():
        source_padding = model.source_padding(source)
        memory = model.encode(source, source_padding)
        full = model.decode(target, memory, source_padding)
        cache, pieces, start = model.new_cache(), [], 0
        for size in chunks:
            pieces.append(model.decode(target[:, start : start + size], memory, source_padding, cache=cache))
            start += size
    assert cache.length == 7
    assert max_diff(torch.cat(pieces, dim=1), full) <= 1e-5
    assert max_diff(full, model(source, target)) <= 1e-5  # no target pads: same as forward


# --------------------------------------------------------------------------------------
# Attention capture, sizes and parameter counts
# --------------------------------------------------------------------------------------


def test_capture_attention_on_the_model() -> None:
    model = tiny_model("relative", False)
    source = torch.tensor([[3, 4, 5, 6, PAD], [7, 8, PAD, PAD, PAD]])
    target = torch.tensor([[BOS, 5, 6], [BOS, 9, PAD]])
    with torch.no_grad():
        plain = model(source, target)
        with capture_attention(model) as weights:
            captured = model(source, target)
    expected_names = {f"encoder.layers.{i}.self_attention" for i in range(2)} | {
        f"decoder.layers.{i}.{kind}" for i in range(2) for kind in ("self_attention", "cross_attention")
    }
    assert set(weights) == expected_names
    assert weights["encoder.layers.0.self_attention"][0].shape == (2, 4, 5, 5)
    assert weights["decoder.layers.1.self_attention"][0].shape == (2, 4, 3, 3)
    cross = weights["decoder.layers.0.cross_attention"][0]
    assert cross.shape == (2, 4, 3, 5)
    assert torch.all(cross[1, :, :, 2:] == 0.0)  # padded source positions get no weight
    assert max_diff(captured, plain) <= 1e-5


def test_shared_and_tied_embeddings() -> None:
    shared = Transformer(tiny_config())
    assert shared.source_embedding is shared.target_embedding
    assert shared.output_projection.weight is shared.target_embedding.weight
    separate = Transformer(tiny_config(share_embeddings=False, tie_output=False, target_vocab_size=31))
    assert separate.output_projection.weight.shape == (31, 16)
    extra = VOCAB * 16 + 31 * 16 + 31 * 16 - VOCAB * 16
    assert separate.num_parameters() - shared.num_parameters() == extra
    for model in (shared, separate):
        assert sum(model.parameter_breakdown().values()) == model.num_parameters()


@pytest.mark.parametrize("name,paper", [("vaswani-base", 65e6), ("vaswani-big", 213e6)])
def test_paper_parameter_counts(name: str, paper: float) -> None:
    with torch.device("meta"):
        model = Transformer(preset(name))
    count = model.num_parameters()
    assert abs(count - paper) / paper <= 0.04, f"{name}: {count:,} parameters, paper {paper:,.0f}"
