"""taa.flax.models.bert: parity with the torch BERT and its heads, pooling, sentence embeddings,
the padding row's gradient, weights both ways, initialisation, dropout, nnx.jit."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from taa import config as cfg
from taa.flax.models.bert import (
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    mean_pool,
    sentence_embeddings,
)
from taa.flax.weights import state_dict
from taa.torch.models import bert as torch_bert
from tests.flax.models.twins import (
    assert_close,
    assert_dropout_in_training_only,
    assert_runs_under_jit,
    assert_state_dict_loads_into_torch,
    gradients,
    torch_outputs,
    twins,
)


def batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids, attention mask (right padding, 0 at pad_id 0) and token types (sentence B from token 4)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 100, (3, 8)).astype("int32")
    mask = np.ones((3, 8), dtype="int32")
    mask[1, 5:] = mask[2, 2:] = 0
    ids[mask == 0] = 0
    types = np.zeros((3, 8), dtype="int32")
    types[:, 4:] = 1
    return ids, mask, types


@pytest.mark.parametrize("pooler", [True, False])
def test_bert_model_equals_torch(pooler: bool) -> None:
    """The encoder with and without a pooler (padding mask, token types): torch's outputs and pooling."""
    model, reference = twins(BertModel, torch_bert.BertModel, cfg.preset("bert-tiny"), pooler=pooler)
    ids, mask, types = batch()
    assert_close(model(ids), torch_outputs(reference, ids))
    assert_close(model(ids, mask, types), torch_outputs(reference, ids, mask, types))
    if pooler:
        hidden = model(ids, mask, types)
        with torch.no_grad():
            expected = reference.pool(torch.from_numpy(np.array(hidden))).numpy()
        assert_close(model.pool(hidden), expected)
    else:
        with pytest.raises(ValueError, match="without a pooler"):
            model.pool(model(ids))
    assert model.build_options == {"pooler": pooler}


@pytest.mark.parametrize(
    "overrides",
    [{"norm_first": True}, {"activation": "gelu_tanh", "norm": "rms", "n_kv_heads": 2, "attention": "readable"}],
    ids=["pre-norm", "gelu_tanh-rms-gqa-readable"],
)
def test_variants_equal_torch(overrides: dict) -> None:
    model, reference = twins(BertModel, torch_bert.BertModel, cfg.preset("bert-tiny", **overrides))
    ids, mask, types = batch()
    assert_close(model(ids, mask, types), torch_outputs(reference, ids, mask, types))
    positions = np.tile(np.arange(8, dtype="int32")[::-1], (3, 1))
    assert_close(
        model(ids, mask, types, position_ids=positions),
        torch_outputs(reference, ids, mask, types, position_ids=torch.from_numpy(positions)),
    )


def test_masked_lm_equals_torch_and_ties_the_decoder() -> None:
    model, reference = twins(BertForMaskedLM, torch_bert.BertForMaskedLM, cfg.preset("bert-tiny"))
    ids, mask, types = batch()
    assert_close(model(ids, mask, types), torch_outputs(reference, ids, mask, types))
    weights = state_dict(model)
    assert "bert.pooler.dense.weight" not in weights
    np.testing.assert_array_equal(weights["mlm_head.decoder.weight"], weights["bert.embeddings.word_embeddings.weight"])
    assert model.mlm_head.decoder.weight is model.bert.embeddings.word_embeddings.weight  # one parameter


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_sequence_classification_equals_torch(pooling: str) -> None:
    config = cfg.preset("bert-tiny", num_labels=3, classifier_pooling=pooling)
    model, reference = twins(BertForSequenceClassification, torch_bert.BertForSequenceClassification, config)
    ids, mask, types = batch()
    assert_close(model(ids, mask, types), torch_outputs(reference, ids, mask, types))
    assert_close(model(ids), torch_outputs(reference, ids))


def test_mean_pool_averages_real_tokens_and_normalises() -> None:
    hidden = np.array([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]], [[0.0, 2.0], [5.0, 5.0], [5.0, 5.0]]], "float32")
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    assert_close(mean_pool(hidden, mask, normalize=False), [[2.0, 2.0], [0.0, 2.0]], atol=1e-7)
    s = 2**-0.5
    assert_close(mean_pool(hidden, mask), [[s, s], [0.0, 1.0]], atol=1e-7)
    empty = np.asarray(mean_pool(hidden, np.zeros((2, 3))))
    assert (empty == 0).all()  # no tokens: zeros, never NaN
    expected = torch_bert.mean_pool(torch.from_numpy(hidden), torch.from_numpy(mask)).numpy()
    assert_close(mean_pool(hidden, mask), expected, atol=1e-7)


def test_sentence_embeddings_equal_torch() -> None:
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate("a b c d e f".split())}}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    model, reference = twins(BertModel, torch_bert.BertModel, cfg.preset("bert-tiny", dropout=0.1))
    model.train()  # sentence_embeddings evaluates, as torch's does
    sentences = ["a b c d e", "f", "b c", "a b c d e f a b"]
    ours = sentence_embeddings(model, tokenizer, sentences, batch_size=2)
    theirs = torch_bert.sentence_embeddings(reference, tokenizer, sentences, batch_size=2).numpy()
    assert isinstance(ours, np.ndarray) and ours.shape == (4, 32)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), np.ones(4), atol=1e-6)


@pytest.mark.parametrize(
    ("flax_class", "torch_class"),
    [
        (BertModel, torch_bert.BertModel),
        (BertForMaskedLM, torch_bert.BertForMaskedLM),
        (BertForSequenceClassification, torch_bert.BertForSequenceClassification),
    ],
)
def test_state_dict_loads_strictly_into_torch_and_counts_alike(flax_class, torch_class) -> None:
    model = flax_class(cfg.preset("bert-tiny"), rngs=nnx.Rngs(1))
    assert_state_dict_loads_into_torch(model, torch_class, batch())


def test_padding_row_gets_no_gradient_as_in_torch() -> None:
    """torch's padding_idx gives the [PAD] row no gradient, even where [PAD] tokens are attended
    to: the gradients of the word embeddings equal torch's, zero in that row."""

    def nonzero_padding_row(reference: torch.nn.Module) -> None:  # so its value matters to the outputs
        reference.embeddings.word_embeddings.weight[0].normal_(0.0, 0.5)

    config = cfg.preset("bert-tiny")
    model, reference = twins(BertModel, torch_bert.BertModel, config, nonzero_padding_row, pooler=False)
    ids, _, _ = batch()  # [PAD] (id 0) in two rows; no mask, so their states depend on it
    target = np.random.default_rng(1).standard_normal((*ids.shape, config.d_model)).astype("float32")
    ours = gradients(model, lambda model: jnp.mean((model(ids) - target) ** 2))
    torch.nn.functional.mse_loss(reference(torch.from_numpy(ids)), torch.from_numpy(target)).backward()
    name = "embeddings.word_embeddings.weight"
    expected = reference.embeddings.word_embeddings.weight.grad.numpy()
    assert (ours[name][0] == 0).all() and (expected[0] == 0).all()
    assert np.abs(ours[name][ids[0, 0]]).max() > 0  # a real token's row has one
    assert_close(ours[name], expected, atol=1e-6)


@pytest.mark.parametrize("model_class", [BertForMaskedLM])
def test_runs_under_jit(model_class) -> None:
    """nnx.jit gives the eager outputs, with mask and types and with ids only (the encoder inside
    the head; the classifier runs under jit in the dropout test)."""
    model = model_class(cfg.preset("bert-tiny"), rngs=nnx.Rngs(0))
    model.eval()
    assert_runs_under_jit(model, batch())
    assert_runs_under_jit(model, batch()[:1])


def test_dropout_acts_in_training_only() -> None:
    config = cfg.preset("bert-tiny", dropout=0.2, attention_dropout=0.1, num_labels=3)
    assert_dropout_in_training_only(BertForSequenceClassification(config, rngs=nnx.Rngs(0)), batch())


def test_initialisation_is_normal_with_a_zero_padding_row() -> None:
    weights = state_dict(BertModel(cfg.preset("bert-tiny", d_model=64, d_ff=128), rngs=nnx.Rngs(0)))
    words = weights["embeddings.word_embeddings.weight"]
    assert words[1:].std() == pytest.approx(0.02, rel=0.1)
    assert (words[0] == 0).all()  # pad_id = 0
    assert weights["encoder.layers.0.self_attention.q_proj.weight"].std() == pytest.approx(0.02, rel=0.1)
    assert not weights["encoder.layers.0.self_attention.q_proj.bias"].any()
    assert (weights["embeddings.norm.weight"] == 1).all()
    head = state_dict(BertForMaskedLM(cfg.preset("bert-tiny", d_model=64), rngs=nnx.Rngs(0)))
    assert head["mlm_head.transform.weight"].std() == pytest.approx(0.02, rel=0.1)
    assert not head["mlm_head.decoder.bias"].any()
