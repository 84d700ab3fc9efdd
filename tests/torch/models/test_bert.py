"""BERT: parameter count against transformers, padding invariance, heads, mean pooling, config."""

from __future__ import annotations

import pytest
import torch

from taa import config as cfg
from taa.config import BertConfig, ConfigError
from taa.torch.models.bert import (
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    mean_pool,
    sentence_embeddings,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(cls=BertModel, **overrides):
    torch.manual_seed(0)
    return cls(cfg.preset("bert-tiny", **overrides)).eval()


def test_bert_base_has_as_many_parameters_as_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        ours = BertModel(cfg.preset("bert-base"))
        theirs = transformers.BertModel(transformers.BertConfig())
    assert ours.num_parameters() == theirs.num_parameters() == 109_482_240
    assert set(ours.parameter_breakdown()) == {"embeddings", "encoder", "pooler"}


def test_minilm_preset_is_all_minilm_l6_v2_shape() -> None:
    transformers = pytest.importorskip("transformers")
    config = cfg.preset("bert-minilm-l6")
    with torch.device("meta"):
        ours = BertModel(config)
        theirs = transformers.BertModel(transformers.BertConfig(
            hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
        ))
    assert ours.num_parameters() == theirs.num_parameters()


def test_padding_does_not_change_the_real_tokens() -> None:
    model = tiny()
    ids = torch.randint(1, 100, (1, 7))
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1]])
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    padded_types = torch.cat([types, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 7), torch.zeros(1, 5)], dim=1).long()
    with torch.no_grad():
        alone = model(ids, None, types)
        batched = model(padded, mask, padded_types)
    torch.testing.assert_close(batched[:, :7], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.pool(batched), model.pool(alone), atol=1e-5, rtol=0)


def test_token_types_and_positions_matter() -> None:
    model = tiny()
    ids = torch.randint(1, 100, (2, 6))
    with torch.no_grad():
        base = model(ids)
        assert not torch.allclose(base, model(ids, token_type_ids=torch.ones_like(ids)))
        assert not torch.allclose(base[:, 0], model(ids.flip(1))[:, -1])  # position embeddings are used


def test_heads_shapes_and_tying() -> None:
    ids = torch.randint(1, 100, (2, 5))
    mlm = tiny(BertForMaskedLM)
    assert mlm(ids).shape == (2, 5, 100)
    assert mlm.mlm_head.decoder.weight is mlm.bert.embeddings.word_embeddings.weight
    assert mlm.bert.pooler is None
    with pytest.raises(ValueError, match="without a pooler"):
        mlm.bert.pool(mlm.bert(ids))
    classifier = tiny(BertForSequenceClassification, num_labels=3)
    assert classifier(ids, torch.ones_like(ids)).shape == (2, 3)


def test_mean_pooled_classifier_reads_the_mean_of_real_tokens() -> None:
    ids = torch.randint(1, 100, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    classifier = tiny(BertForSequenceClassification, num_labels=3, classifier_pooling="mean")
    hidden = classifier.bert(ids, mask)  # (2, 5, d)
    expected = torch.stack([hidden[0].mean(dim=0), hidden[1, :3].mean(dim=0)]) @ classifier.classifier.weight.T
    torch.testing.assert_close(classifier(ids, mask), expected + classifier.classifier.bias)
    # [CLS] pooling (the default) gives other logits from the same weights
    cls_pooled = tiny(BertForSequenceClassification, num_labels=3)
    cls_pooled.load_state_dict(classifier.state_dict())
    assert not torch.allclose(cls_pooled(ids, mask), classifier(ids, mask))
    with pytest.raises(ConfigError, match="classifier_pooling"):
        cfg.preset("bert-tiny", classifier_pooling="max")


def test_bert_initialisation_is_normal_002_with_a_zero_padding_row() -> None:
    torch.manual_seed(0)
    model = BertModel(BertConfig(d_model=128, n_heads=4, d_ff=256, n_layers=2, vocab_size=600, max_length=64))
    assert model.encoder.layers[1].feed_forward.w1.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.embeddings.word_embeddings.weight[1:].std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(model.embeddings.word_embeddings.weight[0] == 0)  # pad_id = 0
    assert torch.all(model.encoder.layers[0].self_attention.q_proj.bias == 0)


def test_mean_pool_averages_real_tokens_and_normalises() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]], [[0.0, 2.0], [5.0, 5.0], [5.0, 5.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask, normalize=False), torch.tensor([[2.0, 2.0], [0.0, 2.0]]))
    s = 2**-0.5
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[s, s], [0.0, 1.0]]))
    empty = mean_pool(hidden, torch.zeros(2, 3))
    assert torch.equal(empty, torch.zeros(2, 2))  # no tokens: zeros, never NaN


def test_sentence_embeddings_batch_by_length_and_keep_the_order() -> None:
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate("a b c d e f".split())}}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    model = tiny()
    sentences = ["a b c d e", "f", "b c", "a b c d e f a b"]
    batched = sentence_embeddings(model, tokenizer, sentences, batch_size=2)
    for sentence, vector in zip(sentences, batched):
        ids = torch.tensor([tokenizer.encode(sentence).ids])
        with torch.no_grad():
            alone = mean_pool(model(ids), torch.ones_like(ids))[0]
        torch.testing.assert_close(vector, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(4))


def test_config_validation_and_model_sections() -> None:
    with pytest.raises(ConfigError, match="activation='swiglu'"):
        BertConfig(activation="swiglu")
    with pytest.raises(ConfigError, match="num_labels=0 must be positive"):
        BertConfig(num_labels=0)
    with pytest.raises(ConfigError, match="pad_id=100 is outside the vocabulary of 100"):
        cfg.preset("bert-tiny", pad_id=100)
    with pytest.raises(ConfigError, match=r"classifier_dropout=1.0 must be in \[0, 1\)"):
        BertConfig(classifier_dropout=1.0)
    section = cfg.model_config_from_dict({"type": "bert", "n_layers": 1, "d_model": 16, "n_heads": 2, "d_ff": 32})
    assert isinstance(section, BertConfig) and section.norm_eps == 1e-12 and not section.norm_first
    assert cfg.model_config_from_dict(cfg.model_config_to_dict(section)) == section
    assert cfg.model_type(cfg.preset("bert-base")) == "bert"
