"""taa.keras.models.bert: parity with the torch BERT and its heads, pooling, weights, config, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from taa import config as cfg
from taa.keras.models.bert import (
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    mean_pool,
    sentence_embeddings,
)
from taa.keras.weights import ensure_built, state_dict
from taa.torch.models import bert as torch_bert
from tests.keras.models.twins import (
    assert_close,
    assert_config_round_trip,
    assert_saves_and_loads,
    assert_state_dict_loads_into_torch,
    assert_sublayers_follow_mixed_precision,
    assert_traces_with_open_lengths,
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
    model, reference = twins(BertModel, torch_bert.BertModel, cfg.preset("bert-tiny"), pooler=pooler)
    ids, mask, types = batch()
    assert_close(model(ids), torch_outputs(reference, ids))
    assert_close(model(ids, mask, types), torch_outputs(reference, ids, mask, types))
    if pooler:
        hidden = model(ids, mask, types)
        with torch.no_grad():
            expected = reference.pool(torch.from_numpy(keras.ops.convert_to_numpy(hidden))).numpy()
        assert_close(model.pool(hidden), expected)
    else:
        with pytest.raises(ValueError, match="without a pooler"):
            model.pool(model(ids))


def test_pre_norm_equals_torch() -> None:
    model, reference = twins(BertModel, torch_bert.BertModel, cfg.preset("bert-tiny", norm_first=True))
    ids, mask, types = batch()
    assert_close(model(ids, mask, types), torch_outputs(reference, ids, mask, types))


def test_masked_lm_equals_torch_and_ties_the_decoder() -> None:
    model, reference = twins(BertForMaskedLM, torch_bert.BertForMaskedLM, cfg.preset("bert-tiny"))
    ids, mask, types = batch()
    assert_close(model(ids, mask, types), torch_outputs(reference, ids, mask, types))
    weights = state_dict(model)
    assert "bert.pooler.dense.weight" not in weights
    np.testing.assert_array_equal(weights["mlm_head.decoder.weight"], weights["bert.embeddings.word_embeddings.weight"])


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
    empty = keras.ops.convert_to_numpy(mean_pool(hidden, np.zeros((2, 3))))
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
    model, reference = twins(BertModel, torch_bert.BertModel, cfg.preset("bert-tiny"))
    sentences = ["a b c d e", "f", "b c", "a b c d e f a b"]
    ours = sentence_embeddings(model, tokenizer, sentences, batch_size=2)
    theirs = torch_bert.sentence_embeddings(reference, tokenizer, sentences, batch_size=2).numpy()
    assert ours.shape == (4, 32)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), np.ones(4), atol=1e-6)


@pytest.mark.parametrize(
    ("keras_class", "torch_class"),
    [
        (BertModel, torch_bert.BertModel),
        (BertForMaskedLM, torch_bert.BertForMaskedLM),
        (BertForSequenceClassification, torch_bert.BertForSequenceClassification),
    ],
)
def test_state_dict_loads_strictly_into_torch_and_counts_alike(keras_class, torch_class) -> None:
    model = keras_class(cfg.preset("bert-tiny"))
    ids, mask, types = batch()
    assert_state_dict_loads_into_torch(model, torch_class, (ids, mask, types))
    assert model.num_parameters() == torch_class(cfg.preset("bert-tiny")).num_parameters()


def test_a_training_step_leaves_the_padding_row_as_torch_does() -> None:
    """torch's padding_idx gives the [PAD] row no gradient: one SGD step on ids with [PAD]
    tokens, attended to, moves the other rows used as torch's step does, and not that one."""

    def nonzero_padding_row(reference: torch.nn.Module) -> None:  # so "unchanged" is not "still zero"
        reference.embeddings.word_embeddings.weight[0].normal_(0.0, 0.5)

    config = cfg.preset("bert-tiny")
    model, reference = twins(BertModel, torch_bert.BertModel, config, nonzero_padding_row, pooler=False)
    ids, _, _ = batch()  # [PAD] (id 0) in two rows; no mask, so their states depend on it
    target = np.random.default_rng(1).standard_normal((*ids.shape, config.d_model)).astype("float32")
    name = "embeddings.word_embeddings.weight"
    before = state_dict(model)[name]
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    model.fit(ids, target, batch_size=len(ids), epochs=1, verbose=0, shuffle=False)
    optimizer = torch.optim.SGD(reference.parameters(), lr=1.0)
    torch.nn.functional.mse_loss(reference(torch.from_numpy(ids)), torch.from_numpy(target)).backward()
    optimizer.step()
    after, expected = state_dict(model)[name], reference.state_dict()[name].numpy()
    np.testing.assert_array_equal(expected[0], before[0])
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.array_equal(after[ids[0, 0]], before[ids[0, 0]])  # a real token's row moved
    np.testing.assert_allclose(after, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("inputs", ["ids", "ids, mask", "ids, mask, types"])
def test_traces_with_open_lengths(inputs: str) -> None:
    model = ensure_built(BertModel(cfg.preset("bert-tiny")))
    assert_traces_with_open_lengths(model, batch()[: inputs.count(",") + 1])


def test_sublayers_follow_mixed_precision() -> None:
    for model_class in (BertForMaskedLM, BertForSequenceClassification):
        assert_sublayers_follow_mixed_precision(lambda **options: model_class(cfg.preset("bert-tiny"), **options))


def test_initialisation_is_normal_with_a_zero_padding_row() -> None:
    keras.utils.set_random_seed(0)
    weights = state_dict(ensure_built(BertModel(cfg.preset("bert-tiny", d_model=64, d_ff=128))))
    words = weights["embeddings.word_embeddings.weight"]
    assert words[1:].std() == pytest.approx(0.02, rel=0.1)
    assert (words[0] == 0).all()  # pad_id = 0
    assert weights["encoder.layers.0.self_attention.q_proj.weight"].std() == pytest.approx(0.02, rel=0.1)
    assert not weights["encoder.layers.0.self_attention.q_proj.bias"].any()
    assert (weights["embeddings.norm.weight"] == 1).all()


def test_config_round_trip_keeps_the_pooler_option(tmp_path) -> None:
    ids, mask, types = batch()
    for pooler in (True, False):
        model = BertModel(cfg.preset("bert-tiny"), pooler=pooler)
        assert model.build_options == {"pooler": pooler}
        assert model.get_config()["pooler"] is pooler
        assert_config_round_trip(model, (ids, mask, types))
    assert_saves_and_loads(model, (ids, mask, types), tmp_path)


def test_heads_save_and_load(tmp_path) -> None:
    ids, mask, types = batch()
    for model_class in (BertForMaskedLM, BertForSequenceClassification):
        model = model_class(cfg.preset("bert-tiny"))
        assert_config_round_trip(model, (ids, mask, types))
        folder = tmp_path / model_class.__name__
        folder.mkdir()
        assert_saves_and_loads(model, (ids, mask, types), folder)
