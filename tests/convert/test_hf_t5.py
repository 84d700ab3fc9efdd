"""Hugging Face T5 <-> taa T5, without downloads: tiny random transformers models built from
configs, saved with safetensors, converted both ways; logits and generated tokens compared.

Variants: v1.0 (ReLU, head tied to ``shared``, decoder output scaled by d_model**-0.5);
v1.1 as released (gated GELU, its own ``lm_head.weight``, no scaling); and v1.1 as
transformers 5 builds it from a config (gated GELU, head tied, no scaling).
"""

import json
import itertools

import pytest
import torch

from taa.config import preset
from taa.convert.hf_t5 import (
    config_from_hf,
    config_to_hf,
    key_map,
    state_dict_from_hf,
    state_dict_to_hf,
)
from taa.convert.state_dict import ConversionError
from taa.torch.convert.hf import load_hf_folder, save_hf_folder
from taa.torch.generate import beam_search, greedy_decode
from taa.torch.models.t5 import T5ForConditionalGeneration

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 64
VARIANTS = ("v1.0", "v1.1", "v1.1-tied")


def _hf_config(variant: str, vocab: int = VOCAB, **overrides):
    fields = dict(
        vocab_size=vocab, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=3,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        feed_forward_proj="relu" if variant == "v1.0" else "gated-gelu",
        tie_word_embeddings=variant == "v1.0",
    )
    return transformers.T5Config(**{**fields, **overrides})


def _hf_model(variant: str, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(_hf_config(variant))
    if variant == "v1.1":  # a released v1.1 checkpoint: the output layer is a matrix of its own
        model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32))
    return model.eval()


def _inputs(vocab: int = VOCAB):
    """Encoder ids with padding (mask 0, id 0) in two rows, and decoder ids starting with 0."""
    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(2, vocab, (3, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    decoder_ids = torch.randint(2, vocab, (3, 9), generator=generator)
    decoder_ids[:, 0] = 0
    return ids, mask, decoder_ids


def _hf_logits(model, ids, mask, decoder_ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits


# --------------------------------------------------------------------------------------
# Hugging Face -> taa -> Hugging Face
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_hugging_face_folder_loads_with_equal_logits(variant, tmp_path):
    hf = _hf_model(variant)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_hf_folder(tmp_path)
    assert ours.config.tie_word_embeddings == (variant != "v1.1")
    assert ours.config.scale_output == (variant == "v1.0")
    assert ours.config.activation == ("relu" if variant == "v1.0" else "geglu")
    assert (ours.config.n_heads * ours.config.d_kv, ours.config.d_model) == (24, 32)  # narrower heads
    ids, mask, decoder_ids = _inputs()
    with torch.no_grad():
        logits = ours(ids, decoder_ids, attention_mask=mask)
    expected = _hf_logits(hf, ids, mask, decoder_ids)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("feed_forward_proj", ["gated-silu", "gelu", "gelu_new"])
def test_other_feed_forwards_convert_with_equal_logits(feed_forward_proj, tmp_path):
    torch.manual_seed(0)
    hf = transformers.T5ForConditionalGeneration(_hf_config("v1.0", feed_forward_proj=feed_forward_proj)).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ids, mask, decoder_ids = _inputs()
    with torch.no_grad():
        logits = load_hf_folder(tmp_path)(ids, decoder_ids, attention_mask=mask)
    torch.testing.assert_close(logits, _hf_logits(hf, ids, mask, decoder_ids), atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_our_folder_loads_in_transformers_with_equal_logits(variant, tmp_path):
    hf = _hf_model(variant)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    ours = load_hf_folder(tmp_path / "hf")
    save_hf_folder(ours, tmp_path / "ours")
    back, info = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    assert (back.lm_head.weight is back.shared.weight) == (variant != "v1.1")
    ids, mask, decoder_ids = _inputs()
    with torch.no_grad():
        logits = ours(ids, decoder_ids, attention_mask=mask)
    torch.testing.assert_close(_hf_logits(back.eval(), ids, mask, decoder_ids), logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["t5-tiny", "t5-v1_1-tiny"])
def test_a_taa_model_saves_for_transformers(name, tmp_path):
    """Our own initialisation and presets, saved and read back by transformers and by us."""
    torch.manual_seed(0)
    ours = T5ForConditionalGeneration(preset(name)).eval()
    save_hf_folder(ours, tmp_path)
    hf, info = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    ids, mask, decoder_ids = _inputs(ours.config.vocab_size)
    with torch.no_grad():
        logits = ours(ids, decoder_ids, attention_mask=mask)
        again = load_hf_folder(tmp_path)(ids, decoder_ids, attention_mask=mask)
    torch.testing.assert_close(_hf_logits(hf.eval(), ids, mask, decoder_ids), logits, atol=1e-5, rtol=0)
    assert torch.equal(again, logits)


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dicts_round_trip_exactly(variant):
    hf = _hf_model(variant)
    config = config_from_hf(hf.config.to_dict() | {"tie_word_embeddings": variant != "v1.1"})
    theirs = {k: v for k, v in hf.state_dict().items() if "embed_tokens" not in k}
    if config.tie_word_embeddings:
        theirs.pop("lm_head.weight", None)
    ours = state_dict_from_hf(hf.state_dict(), config)  # the tied copies are accepted and dropped
    back = state_dict_to_hf(ours, config)
    assert back.keys() == theirs.keys()
    assert all(torch.equal(back[key], theirs[key]) for key in theirs)


def test_configs_round_trip():
    for name in ("t5-small", "t5-v1_1-small", "t5-tiny", "t5-v1_1-tiny"):
        config = preset(name)
        assert config_from_hf(config_to_hf(config)) == config
        hf_fields = {k: v for k, v in config_to_hf(config).items() if k not in ("architectures", "model_type")}
        hf_config = transformers.T5Config(**hf_fields)  # transformers accepts every field
        assert hf_config.scale_decoder_outputs == config.scale_output
        assert (hf_config.num_heads, hf_config.d_kv, hf_config.num_decoder_layers) == (
            config.n_heads, config.d_kv, config.n_decoder_layers
        )


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_one_error_names_every_bad_key():
    hf = _hf_model("v1.0")
    config = config_from_hf(hf.config.to_dict())
    state_dict = dict(hf.state_dict())
    del state_dict["decoder.block.2.layer.1.EncDecAttention.k.weight"]  # missing
    state_dict["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"] = torch.zeros(48, 32)  # unexpected
    state_dict["encoder.block.1.layer.0.SelfAttention.q.weight"] = torch.zeros(24, 31)  # mis-shaped
    state_dict["decoder.embed_tokens.weight"] = torch.zeros(VOCAB, 32)  # a tied copy that is not a copy
    with pytest.raises(ConversionError) as error:
        state_dict_from_hf(state_dict, config)
    message = str(error.value)
    assert message.startswith("Hugging Face T5 state dict: ")
    for expected in (
        "missing keys: decoder.block.2.layer.1.EncDecAttention.k.weight",
        "unexpected keys: encoder.block.0.layer.1.DenseReluDense.wi_0.weight",
        "encoder.block.1.layer.0.SelfAttention.q.weight (24, 31) != expected (24, 32)",
        "decoder.embed_tokens.weight differs from shared.weight",
    ):
        assert expected in message
    assert "\n" not in message


def test_untied_head_under_a_tied_config_is_an_error():
    hf = _hf_model("v1.1")
    config = config_from_hf(hf.config.to_dict() | {"tie_word_embeddings": True})
    with pytest.raises(ConversionError, match="lm_head.weight differs from shared.weight.*tie_word_embeddings=false"):
        state_dict_from_hf(hf.state_dict(), config)


def test_legacy_cross_attention_bias_is_ignored_as_transformers_does(tmp_path):
    hf = _hf_model("v1.0")
    config = config_from_hf(hf.config.to_dict())
    state_dict = dict(hf.state_dict())
    state_dict["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = torch.zeros(8, 3)
    assert "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight" not in key_map(config)
    assert set(state_dict_from_hf(state_dict, config)) == set(T5ForConditionalGeneration(config).state_dict())


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"feed_forward_proj": "gated-tanh"}, "feed_forward_proj='gated-tanh' is not one of"),
        ({"model_type": "bart"}, "model_type='bart' is not 't5'"),
        ({"d_kv": 0}, "Hugging Face T5 config: d_kv=0 must be positive"),
        ({"eos_token_id": [1, 2]}, r"eos_token_id=\[1, 2\]"),
    ],
)
def test_bad_config_names_the_field(fields, message):
    with pytest.raises(ConversionError, match=message):
        config_from_hf(_hf_config("v1.0").to_dict() | fields)


def test_layer_norm_or_biases_cannot_go_to_hugging_face():
    with pytest.raises(ConversionError, match="norm='layer', bias=True"):
        config_to_hf(preset("t5-tiny", norm="layer", bias=True))


def test_weights_other_than_safetensors_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(config_to_hf(preset("t5-tiny"))))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ConversionError, match="safetensors only"):
        load_hf_folder(tmp_path)


# --------------------------------------------------------------------------------------
# Generation: our greedy_decode and beam_search == transformers' generate
# --------------------------------------------------------------------------------------

GEN_VOCAB, NEW_TOKENS = 16, 10


def _reversal_batch(generator, n: int, length: int = 8):
    """Reverse 2..length tokens, then the end token 1: enough to make EOS compete with other tokens."""
    lengths = torch.randint(2, length + 1, (n,), generator=generator)
    ids = torch.randint(2, GEN_VOCAB, (n, length), generator=generator)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    ids = ids.masked_fill(~mask, 0)
    labels = torch.full((n, length + 1), -100)
    for row, size in enumerate(lengths.tolist()):
        labels[row, :size] = ids[row, :size].flip(0)
        labels[row, size] = 1
    return ids, mask.long(), labels


@pytest.fixture(scope="module")
def generation_pair(tmp_path_factory):
    """A tiny HF T5 trained for 40 steps (random ones only repeat a token and never end),
    and the same weights in taa; plus a padded batch of 8 inputs."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    hf = transformers.T5ForConditionalGeneration(_hf_config("v1.0", vocab=GEN_VOCAB, num_decoder_layers=2, num_heads=4))
    optimizer = torch.optim.Adam(hf.parameters(), lr=1e-2)
    for _ in range(40):
        ids, mask, labels = _reversal_batch(generator, 32)
        loss = hf(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hf.eval()
    folder = tmp_path_factory.mktemp("t5-generation")
    hf.save_pretrained(folder, safe_serialization=True)
    ids, mask, _ = _reversal_batch(torch.Generator().manual_seed(5), 8)
    return hf, load_hf_folder(folder), ids, mask


def _hf_hypotheses(sequences: torch.Tensor) -> list[list[int]]:
    """HF's output rows -> our beam_search's: no start token, nothing from the end token on."""
    hypotheses = []
    for row in sequences.tolist():
        row = row[1:]
        if 1 in row:
            row = row[: row.index(1)]
        while row and row[-1] == 0:  # padding after a hypothesis cut at the limit
            row.pop()
        hypotheses.append(row)
    return hypotheses


def test_greedy_equals_transformers_generate(generation_pair):
    hf, ours, ids, mask = generation_pair
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, num_beams=1, do_sample=False)
    tokens = greedy_decode(ours, ids, max_length=NEW_TOKENS + 1)
    assert torch.equal(tokens, expected)  # start token, tokens, end token, pad after it: all the same
    assert 1 <= int((tokens == 1).any(dim=1).sum()) < len(ids)  # some rows end early, some run to the limit


# HF early_stopping -> our stopping rule (with length_penalty_rule="power": lp = |Y| ** alpha).
HF_EARLY_STOPPING = {"exact": "never", "current_length": False, "k_finished": True}


@pytest.mark.parametrize("alpha, stopping", list(itertools.product([0.0, 1.0, 2.0, -0.5], HF_EARLY_STOPPING)))
def test_beam_search_equals_transformers_generate(generation_pair, alpha, stopping):
    hf, ours, ids, mask = generation_pair
    expected = hf.generate(
        ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, num_beams=4, do_sample=False,
        length_penalty=alpha, early_stopping=HF_EARLY_STOPPING[stopping],
    )
    hypotheses = beam_search(
        ours, ids, beam_size=4, max_length=NEW_TOKENS + 1, length_penalty=alpha,
        length_penalty_rule="power", stopping=stopping,
    )
    assert hypotheses == _hf_hypotheses(expected)


def test_the_beam_search_options_matter_here(generation_pair):
    """On this model the rules give different answers, so the parity above can fail."""
    _, ours, ids, _ = generation_pair

    def search(alpha=1.0, **options):
        return beam_search(ours, ids, beam_size=4, max_length=NEW_TOKENS + 1, length_penalty=alpha, **options)

    power = search(length_penalty_rule="power")
    assert search() != power  # GNMT's ((5 + |Y|) / 6) ** alpha ranks differently
    assert search(length_penalty_rule="power", stopping="k_finished") != power
    exact = search(2.0, length_penalty_rule="power")
    assert search(2.0, length_penalty_rule="power", stopping="current_length") != exact


def test_unknown_beam_options_are_errors(generation_pair):
    _, ours, ids, _ = generation_pair
    with pytest.raises(ValueError, match="length_penalty_rule='hf' is not one of gnmt, power"):
        beam_search(ours, ids, length_penalty_rule="hf")
    with pytest.raises(ValueError, match="stopping='never' is not one of exact, current_length, k_finished"):
        beam_search(ours, ids, stopping="never")
