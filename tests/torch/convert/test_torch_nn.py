"""torch.nn.Transformer <-> taa converter: exact key maps, round trips and loud failures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taa.config import TransformerConfig
from taa.convert.state_dict import ConversionError
from taa.torch.convert.state_dict import load_checked
from taa.torch.convert.torch_nn import from_torch_nn, to_torch_nn
from taa.torch.models.transformer import Transformer

D, HEADS, FF = 16, 4, 32


def reference(n_encoder: int = 2, n_decoder: int = 3, seed: int = 0) -> nn.Transformer:
    torch.manual_seed(seed)
    model = nn.Transformer(D, HEADS, n_encoder, n_decoder, FF, dropout=0.0, batch_first=True)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()  # every tensor distinct, so a swapped key cannot go unnoticed
    return model


def taa_model(n_encoder: int = 2, n_decoder: int = 3) -> Transformer:
    return Transformer(
        TransformerConfig(
            d_model=D, n_heads=HEADS, d_ff=FF, dropout=0.0, n_encoder_layers=n_encoder, n_decoder_layers=n_decoder,
            source_vocab_size=11, target_vocab_size=11, max_length=16, final_norm=True,
        )
    )


@pytest.mark.parametrize("layers", [(2, 3), (1, 1), (0, 2)])
def test_round_trip_is_exact(layers: tuple[int, int]) -> None:
    state = reference(*layers).state_dict()
    back = to_torch_nn(from_torch_nn(state, *layers), *layers)
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key


def test_every_converted_key_loads_into_taa() -> None:
    state = reference().state_dict()
    converted = from_torch_nn(state, 2, 3)
    model = taa_model()
    ours = {k: v for k, v in model.state_dict().items() if k.startswith(("encoder.", "decoder."))}
    assert set(converted) == set(ours)
    for key, value in converted.items():
        assert value.shape == ours[key].shape, key
    full = model.state_dict()
    full.update(converted)
    load_checked(model, full, "taa")
    # packed projections split in the order W^Q, W^K, W^V
    packed = state["decoder.layers.1.multihead_attn.in_proj_weight"]
    attention = model.decoder.layers[1].cross_attention
    assert torch.equal(attention.q_proj.weight, packed[:D])
    assert torch.equal(attention.k_proj.weight, packed[D : 2 * D])
    assert torch.equal(attention.v_proj.weight, packed[2 * D :])
    assert torch.equal(attention.v_proj.bias, state["decoder.layers.1.multihead_attn.in_proj_bias"][2 * D :])
    assert torch.equal(model.encoder.final_norm.weight, state["encoder.norm.weight"])
    assert torch.equal(model.decoder.layers[2].feed_forward_residual.norm.bias, state["decoder.layers.2.norm3.bias"])
    assert torch.equal(model.encoder.layers[0].feed_forward.w2.weight, state["encoder.layers.0.linear2.weight"])


def test_to_torch_nn_loads_into_torch_and_ignores_embeddings() -> None:
    model = taa_model()
    converted = to_torch_nn(model.state_dict(), 2, 3)
    assert not any("embedding" in key or "output_projection" in key for key in converted)
    target = reference(seed=1)
    target.load_state_dict(converted, strict=True)
    assert torch.equal(
        target.encoder.layers[1].self_attn.in_proj_weight[D : 2 * D], model.encoder.layers[1].self_attention.k_proj.weight
    )


def test_missing_unexpected_and_misshaped_keys_are_all_listed() -> None:
    state = dict(reference().state_dict())
    del state["encoder.layers.0.linear1.bias"]
    del state["decoder.layers.2.multihead_attn.in_proj_weight"]
    state["encoder.layers.0.extra.weight"] = torch.zeros(3)
    state["decoder.layers.3.norm1.weight"] = torch.zeros(D)  # a layer the config does not have
    with pytest.raises(ConversionError) as error:
        from_torch_nn(state, 2, 3)
    message = str(error.value)
    for key in (
        "encoder.layers.0.linear1.bias",
        "decoder.layers.2.multihead_attn.in_proj_weight",
        "encoder.layers.0.extra.weight",
        "decoder.layers.3.norm1.weight",
    ):
        assert key in message
    assert "missing keys" in message and "unexpected keys" in message


def test_wrong_layer_count_is_an_error() -> None:
    state = reference(2, 3).state_dict()
    with pytest.raises(ConversionError, match="missing keys: .*decoder.layers.3"):
        from_torch_nn(state, 2, 4)
    with pytest.raises(ConversionError, match="unexpected keys: .*encoder.layers.1"):
        from_torch_nn(state, 1, 3)


def test_misshaped_tensor_is_caught_before_loading() -> None:
    state = dict(reference().state_dict())
    state["encoder.layers.1.linear1.weight"] = torch.zeros(FF + 1, D)
    state["decoder.layers.0.self_attn.in_proj_weight"] = torch.zeros(3 * 2 * D, D)
    model = taa_model()
    full = model.state_dict()
    full.update(from_torch_nn(state, 2, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConversionError) as error:
        load_checked(model, full, "taa")
    message = str(error.value)
    assert "mis-shaped" in message
    assert f"encoder.layers.1.feed_forward.w1.weight ({FF + 1}, {D}) != expected ({FF}, {D})" in message
    for name in ("q", "k", "v"):
        assert f"decoder.layers.0.self_attention.{name}_proj.weight" in message
    # nothing was loaded
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_to_torch_nn_reports_missing_keys() -> None:
    state = {k: v for k, v in taa_model().state_dict().items() if "decoder.layers.1.cross_attention.k_proj" not in k}
    with pytest.raises(ConversionError, match="decoder.layers.1.cross_attention.k_proj.weight"):
        to_torch_nn(state, 2, 3)


def test_to_torch_nn_needs_the_final_norms() -> None:
    without_final_norm = Transformer(
        TransformerConfig(
            d_model=D, n_heads=HEADS, d_ff=FF, n_encoder_layers=1, n_decoder_layers=1,
            source_vocab_size=11, target_vocab_size=11, max_length=16, final_norm=False,
        )
    )
    with pytest.raises(ConversionError) as error:
        to_torch_nn(without_final_norm.state_dict(), 1, 1)
    for key in ("encoder.final_norm.weight", "encoder.final_norm.bias", "decoder.final_norm.weight"):
        assert key in str(error.value)
