"""Encoder and decoder layers and stacks against torch.nn.Transformer (post- and pre-norm)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taa.config import BlockConfig
from taa.torch.attention import causal_mask, key_padding_to_attention_mask, padding_mask
from taa.torch.blocks import Decoder, DecoderCache, DecoderLayer, Encoder, EncoderLayer, LayerCache, Residual
from taa.torch.convert.state_dict import load_checked
from taa.torch.convert.torch_nn import from_torch_nn
from taa.torch.norm import LayerNorm, RMSNorm

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning"),
    pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning"),
]

D, HEADS, FF, N_ENC, N_DEC = 16, 4, 32, 2, 2


def block_config(**overrides) -> BlockConfig:
    fields = dict(d_model=D, n_heads=HEADS, d_ff=FF, dropout=0.0)
    return BlockConfig(**{**fields, **overrides})


class Stacks(nn.Module):
    """An encoder and a decoder under the names torch.nn.Transformer uses."""

    def __init__(self, config: BlockConfig) -> None:
        super().__init__()
        self.encoder = Encoder(config, N_ENC, final_norm=True)
        self.decoder = Decoder(config, N_DEC, final_norm=True)


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Perturb every vector parameter so zero biases and unit norm weights hide nothing."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.dim() == 1:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return module


def paired_stacks(activation: str, norm_first: bool, seed: int = 0) -> tuple[Stacks, nn.Transformer]:
    torch.manual_seed(seed)
    reference = nn.Transformer(
        D, HEADS, N_ENC, N_DEC, FF, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    )
    randomise(reference, seed).eval()
    ours = Stacks(block_config(activation=activation, norm_first=norm_first))
    load_checked(ours, from_torch_nn(reference.state_dict(), N_ENC, N_DEC), "stacks")
    return ours.eval(), reference


def inputs(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    source = torch.randn(3, 7, D, generator=generator)
    target = torch.randn(3, 5, D, generator=generator)
    source_real = padding_mask(lengths=torch.tensor([7, 4, 1]), max_length=7)
    target_real = padding_mask(lengths=torch.tensor([5, 5, 3]), max_length=5)
    return source, target, source_real, target_real


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("target_padding", [False, True])
def test_stacks_match_torch_nn_transformer(activation: str, norm_first: bool, target_padding: bool) -> None:
    ours, reference = paired_stacks(activation, norm_first)
    source, target, source_real, target_real = inputs()
    with torch.no_grad():
        expected = reference(
            source,
            target,
            tgt_mask=~causal_mask(5),  # torch: True = not allowed
            src_key_padding_mask=~source_real,  # torch: True = padding
            tgt_key_padding_mask=~target_real if target_padding else None,
            memory_key_padding_mask=~source_real,
        )
        expected_memory = reference.encoder(source, src_key_padding_mask=~source_real)
        memory = ours.encoder(source, key_padding_to_attention_mask(source_real))
        self_mask = key_padding_to_attention_mask(target_real) if target_padding else None
        output = ours.decoder(target, memory, self_mask, key_padding_to_attention_mask(source_real))
    # torch's encoder fast path may zero padded positions: compare the real ones
    assert max_diff(memory[source_real], expected_memory[source_real]) <= 1e-5
    assert output.shape == expected.shape == (3, 5, D)
    assert max_diff(output, expected) <= 1e-5


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_single_layers_match_torch_nn_layers(norm_first: bool) -> None:
    ours, reference = paired_stacks("relu", norm_first, seed=2)
    source, target, source_real, _ = inputs(3)
    with torch.no_grad():
        expected = reference.encoder.layers[0](source, src_key_padding_mask=~source_real)
        encoded = ours.encoder.layers[0](source, key_padding_to_attention_mask(source_real))
        assert max_diff(encoded[source_real], expected[source_real]) <= 1e-5
        expected = reference.decoder.layers[1](
            target, source, tgt_mask=~causal_mask(5), memory_key_padding_mask=~source_real
        )
        decoded = ours.decoder.layers[1](target, source, None, key_padding_to_attention_mask(source_real))
    assert max_diff(decoded, expected) <= 1e-5


def test_residual_orders() -> None:
    torch.manual_seed(4)
    x = torch.randn(2, 3, D)
    sublayer = nn.Linear(D, D)
    post = Residual(block_config(norm_first=False))
    pre = Residual(block_config(norm_first=True))
    randomise(post, 5), randomise(pre, 5)
    with torch.no_grad():
        assert max_diff(post(x, sublayer), post.norm(x + sublayer(x))) == 0.0
        assert max_diff(pre(x, sublayer), x + sublayer(pre.norm(x))) == 0.0


@pytest.mark.parametrize("norm,expected", [("layer", LayerNorm), ("rms", RMSNorm)])
def test_norm_kind_and_bias_come_from_the_config(norm: str, expected: type) -> None:
    layer = DecoderLayer(block_config(norm=norm, bias=False))
    for residual in (layer.self_attention_residual, layer.cross_attention_residual, layer.feed_forward_residual):
        assert isinstance(residual.norm, expected)
    assert layer.self_attention.q_proj.bias is None and layer.feed_forward.w1.bias is None
    assert all("bias" not in name for name, _ in layer.named_parameters())


def test_grouped_query_layers() -> None:
    layer = EncoderLayer(block_config(n_kv_heads=2))
    assert layer.self_attention.k_proj.weight.shape == (2 * D // HEADS, D)
    assert layer(torch.randn(2, 3, D)).shape == (2, 3, D)


def test_encoder_without_final_norm_and_with_zero_layers() -> None:
    config = block_config()
    assert Encoder(config, 2, final_norm=False).final_norm is None
    x = torch.randn(2, 3, D)
    assert torch.equal(Encoder(config, 0, final_norm=False)(x), x)
    assert torch.equal(Decoder(config, 0, final_norm=False)(x, x), x)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1], [2, 3]], ids=["tokens", "chunks"])
def test_decoder_cache_equals_full_recomputation(norm_first: bool, chunks: list[int]) -> None:
    ours, _ = paired_stacks("gelu", norm_first, seed=6)
    source, target, source_real, _ = inputs(7)
    memory_mask = key_padding_to_attention_mask(source_real)
    with torch.no_grad():
        memory = ours.encoder(source, memory_mask)
        full = ours.decoder(target, memory, None, memory_mask)
        cache, pieces, start = DecoderCache.empty(N_DEC), [], 0
        for size in chunks:
            pieces.append(ours.decoder(target[:, start : start + size], memory, None, memory_mask, cache))
            start += size
            assert cache.length == start
    assert max_diff(torch.cat(pieces, dim=1), full) <= 1e-5


def test_decoder_cache_bookkeeping() -> None:
    cache = DecoderCache.empty(3)
    assert len(cache.layers) == 3 and cache.length == 0
    assert all(isinstance(layer, LayerCache) for layer in cache.layers)
    assert cache.layers[0].self_attention is not cache.layers[1].self_attention
    assert DecoderCache.empty(0).length == 0
    for layer in cache.layers:
        layer.self_attention.append(torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 4, 5), torch.zeros(3, 2, 4, 5))
        layer.cross_attention.append(torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 6, 5), torch.zeros(3, 2, 6, 5))
    assert cache.length == 4
    cache.reorder(torch.tensor([1, 1, 2]))
    for layer in cache.layers:
        assert layer.self_attention.keys[:, 0, 0, 0].tolist() == [1.0, 1.0, 2.0]
        assert layer.cross_attention.keys[:, 0, 0, 0].tolist() == [1.0, 1.0, 2.0]
    # beams trading places within a sentence leave the cross-attention cache alone
    cache.reorder(torch.tensor([2, 0, 1]), cross_attention=False)
    for layer in cache.layers:
        assert layer.self_attention.keys[:, 0, 0, 0].tolist() == [2.0, 1.0, 1.0]
        assert layer.cross_attention.keys[:, 0, 0, 0].tolist() == [1.0, 1.0, 2.0]
