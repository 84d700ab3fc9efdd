"""BERT: a bidirectional Transformer encoder with masked-LM and classification heads; the
Keras twin of :mod:`taa.torch.models.bert`.

BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding") is the encoder of "Attention Is All You Need" with:

- input embeddings (§3, Figure 2): the sum of token (WordPiece), segment (sentence A/B,
  "token type") and learned position embeddings, then LayerNorm and dropout;
- post-norm encoder layers with the exact GELU in the feed-forward (§3, "Model Architecture");
- a pooler for sentence-level tasks: tanh(W h_[CLS] + b) on the first token's state (§3.2);
- the masked-LM head (§3.1, Task #1; Appendix A.1): dense + GELU + LayerNorm, then a
  decoder tied to the token embedding with a bias of its own;
- sequence classification (§4.1): a linear layer on the pooled, dropped-out [CLS] state.

Class and attribute names are torch's (and transformers'), so :mod:`taa.keras.weights`
gives the state dict of the torch twin.

Sentence embeddings (Reimers & Gurevych 2019, "Sentence-BERT", §3): the mean of the
last hidden states over real tokens, L2-normalised (:func:`mean_pool`,
:func:`sentence_embeddings`), as all-MiniLM-L6-v2 is trained to give.

Notation: ``b`` batch, ``n`` length, ``d`` hidden size, ``v`` vocabulary, ``c`` labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import keras
import numpy as np
from keras import ops

from taa.config import BertConfig
from taa.keras.attention import key_padding_to_attention_mask
from taa.keras.base import build_sublayers
from taa.keras.blocks import Encoder, config_from, config_to_dict, norm_from_config
from taa.keras.dropout import Dropout
from taa.keras.feedforward import ACTIVATIONS
from taa.keras.models.gpt import normal_init_
from taa.keras.models.transformer import ConfigModel, TiedLinear
from taa.keras.positional import LearnedPositionalEmbedding


class _BertPart(keras.layers.Layer):
    """A part of BERT built from the model's config: ``get_config`` stores the config."""

    def get_config(self) -> dict:
        return {**super().get_config(), "config": config_to_dict(self.config)}


@keras.saving.register_keras_serializable(package="taa")
class BertEmbeddings(_BertPart):
    """word + segment + position embeddings, LayerNorm, dropout (§3, Figure 2)."""

    def __init__(self, config: BertConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config = config_from(config)
        d, dtype = config.d_model, self.dtype_policy
        self.word_embeddings = keras.layers.Embedding(config.vocab_size, d, name="word_embeddings", dtype=dtype)
        # torch's padding_idx: normal_init_ zeroes this row, and call gives it no gradient
        self.word_embeddings.padding_idx = config.pad_id
        self.position_embeddings = LearnedPositionalEmbedding(
            config.max_length, d, name="position_embeddings", dtype=dtype
        )
        self.token_type_embeddings = keras.layers.Embedding(
            config.type_vocab_size, d, name="token_type_embeddings", dtype=dtype
        )
        self.norm = norm_from_config(config, dtype)
        self.dropout = Dropout(config.dropout, name="dropout", dtype=dtype)

    def build(self, input_shape=None) -> None:
        build_sublayers(
            (None, None, self.config.d_model),
            self.word_embeddings, self.position_embeddings, self.token_type_embeddings, self.norm,
        )
        self.built = True

    def call(self, input_ids, token_type_ids=None, position_ids=None, training=None):  # (b, n) -> (b, n, d)
        if token_type_ids is None:
            token_type_ids = ops.zeros_like(input_ids)  # every token in sentence A
        words = self.word_embeddings(input_ids)  # (b, n, d)
        # The padding row's value, with no gradient: training never moves it (torch's padding_idx).
        is_padding = ops.expand_dims(ops.equal(input_ids, self.config.pad_id), -1)  # (b, n, 1)
        words = ops.where(is_padding, ops.stop_gradient(words), words)
        x = words + self.token_type_embeddings(token_type_ids)  # (b, n, d)
        x = self.position_embeddings(x, offset=0, position_ids=position_ids)
        return self.dropout(self.norm(x), training=training)


@keras.saving.register_keras_serializable(package="taa")
class BertPooler(_BertPart):
    """tanh(W h_0 + b): the first token's ([CLS]) final state, for sentence-level tasks (§3.2)."""

    def __init__(self, config: BertConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config_from(config)
        self.dense = keras.layers.Dense(self.config.d_model, name="dense", dtype=self.dtype_policy)

    def build(self, input_shape=None) -> None:
        build_sublayers((None, self.config.d_model), self.dense)
        self.built = True

    def call(self, hidden):  # (b, n, d) -> (b, d)
        return ops.tanh(self.dense(hidden[:, 0]))


@keras.saving.register_keras_serializable(package="taa")
class BertModel(ConfigModel):
    """The BERT encoder: ``model(input_ids, attention_mask, token_type_ids)`` -> last hidden states (b, n, d).

    ``attention_mask`` (b, n) is 1 at real tokens and 0 at padding (None: all real, as in
    transformers; padding is not guessed from ``pad_id``). ``pooler=False`` leaves out the
    pooler, as transformers does under its masked-LM head.

    >>> model = BertModel(taa.config.preset("bert-tiny"))
    >>> hidden = model(np.array([[2, 5, 6, 3, 0]]), np.array([[1, 1, 1, 1, 0]]))  # (1, 5, 32)
    """

    def __init__(self, config: BertConfig, pooler: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        dtype = self.dtype_policy
        self.embeddings = BertEmbeddings(config, name="embeddings", dtype=dtype)
        self.encoder = Encoder(config, config.n_layers, final_norm=config.norm_first, name="encoder", dtype=dtype)
        self.pooler = BertPooler(config, name="pooler", dtype=dtype) if pooler else None
        normal_init_(self, config.init_std)

    def build(self, input_shape=None) -> None:
        # the pooler too, which call does not use (pool() does)
        build_sublayers((None, None, self.config.d_model), self.embeddings, self.encoder, self.pooler)
        self.built = True

    def call(self, input_ids, attention_mask=None, token_type_ids=None, *, position_ids=None, training=None):
        # (b, n) -> (b, n, d)
        x = self.embeddings(input_ids, token_type_ids, position_ids=position_ids, training=training)
        mask = None
        if attention_mask is not None:  # always applied (torch skips an all-ones mask: the same numbers)
            mask = key_padding_to_attention_mask(ops.cast(attention_mask, "bool"))  # (b, 1, 1, n)
        return self.encoder(x, mask, training=training)

    def pool(self, hidden):
        """Last hidden states (b, n, d) -> the pooled [CLS] vector (b, d)."""
        if self.pooler is None:
            raise ValueError("this BertModel was built without a pooler (pooler=False)")
        return self.pooler(hidden)

    @property
    def build_options(self) -> dict[str, Any]:
        """What the constructor takes beside the config, to build this model again (``model.yaml``)."""
        return {"pooler": self.pooler is not None}


@keras.saving.register_keras_serializable(package="taa")
class BertMaskedLMHead(_BertPart):
    """Dense + activation + LayerNorm, then the decoder plus a bias (§3.1).

    Given ``word_embeddings``, the decoder's weight is their matrix (tied, as in
    :class:`BertForMaskedLM`); without, it has one of its own. ``get_config`` keeps the
    config only: the model that owns the embeddings ties them again.
    """

    def __init__(self, config: BertConfig, word_embeddings: Optional[keras.layers.Embedding] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config = config_from(config)
        dtype = self.dtype_policy
        self.transform = keras.layers.Dense(config.d_model, name="transform", dtype=dtype)
        self.activation = ACTIVATIONS[config.activation]
        self.norm = norm_from_config(config, dtype)
        self.decoder = (
            TiedLinear(word_embeddings, bias=True, name="decoder", dtype=dtype)
            if word_embeddings is not None
            else keras.layers.Dense(config.vocab_size, name="decoder", dtype=dtype)
        )

    def build(self, input_shape=None) -> None:
        build_sublayers((None, None, self.config.d_model), self.transform, self.norm, self.decoder)
        self.built = True

    def call(self, hidden):  # (b, n, d) -> (b, n, v)
        return self.decoder(self.norm(self.activation(self.transform(hidden))))


@keras.saving.register_keras_serializable(package="taa")
class BertForMaskedLM(ConfigModel):
    """BERT with the masked-LM head: ``model(input_ids, attention_mask, token_type_ids)`` -> logits (b, n, v)."""

    tied_weights = {"mlm_head.decoder.weight": "bert.embeddings.word_embeddings.weight"}

    def __init__(self, config: BertConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.bert = BertModel(config, pooler=False, name="bert", dtype=self.dtype_policy)
        self.mlm_head = BertMaskedLMHead(
            config, self.bert.embeddings.word_embeddings, name="mlm_head", dtype=self.dtype_policy
        )
        normal_init_(self.mlm_head, config.init_std)

    def build(self, input_shape=None) -> None:
        build_sublayers((None, None, self.config.d_model), self.bert, self.mlm_head)
        self.built = True

    def call(self, input_ids, attention_mask=None, token_type_ids=None, *, position_ids=None, training=None):
        # (b, n) -> (b, n, v)
        hidden = self.bert(input_ids, attention_mask, token_type_ids, position_ids=position_ids, training=training)
        return self.mlm_head(hidden)


@keras.saving.register_keras_serializable(package="taa")
class BertForSequenceClassification(ConfigModel):
    """BERT with a classifier on the pooled [CLS] state (§4.1): -> logits (b, c).

    ``config.classifier_pooling="mean"`` feeds the classifier the mean of the last hidden
    states over real tokens instead (:func:`mean_pool`, not normalised): the sentence
    vector a Sentence-BERT checkpoint was trained to produce. The pooler is then unused.
    """

    def __init__(self, config: BertConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        dtype = self.dtype_policy
        self.bert = BertModel(config, name="bert", dtype=dtype)
        classifier_dropout = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = Dropout(classifier_dropout, name="dropout", dtype=dtype)
        self.classifier = keras.layers.Dense(config.num_labels, name="classifier", dtype=dtype)
        normal_init_(self.classifier, config.init_std)

    def build(self, input_shape=None) -> None:
        build_sublayers((None, None, self.config.d_model), self.bert, self.classifier)
        self.built = True

    def call(self, input_ids, attention_mask=None, token_type_ids=None, *, position_ids=None, training=None):
        # (b, n) -> (b, c)
        hidden = self.bert(input_ids, attention_mask, token_type_ids, position_ids=position_ids, training=training)
        if self.config.classifier_pooling == "mean":
            real = attention_mask if attention_mask is not None else ops.ones_like(input_ids)
            pooled = mean_pool(hidden, real, normalize=False)  # (b, d)
        else:
            pooled = self.bert.pool(hidden)  # (b, d): tanh(W h_[CLS] + b)
        return self.classifier(self.dropout(pooled, training=training))


# --------------------------------------------------------------------------------------
# Sentence embeddings (Sentence-BERT §3: mean pooling)
# --------------------------------------------------------------------------------------


def mean_pool(hidden, attention_mask, normalize: bool = True):
    """The mean of the hidden states (b, n, d) over real tokens (mask (b, n) 1 there) -> (b, d),
    L2-normalised unless ``normalize=False``."""
    mask = ops.expand_dims(ops.cast(attention_mask, hidden.dtype), -1)  # (b, n, 1)
    summed = ops.sum(hidden * mask, axis=1)  # (b, d)
    pooled = summed / ops.maximum(ops.sum(mask, axis=1), 1e-9)  # a row without tokens stays zero
    if not normalize:
        return pooled
    return pooled / ops.maximum(ops.norm(pooled, axis=-1, keepdims=True), 1e-12)  # as torch's F.normalize


def sentence_embeddings(
    model: BertModel,
    tokenizer,
    sentences: Sequence[str],
    batch_size: int = 32,
    normalize: bool = True,
) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings (len(sentences), d) of a ``BertModel``, as numpy.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` that adds [CLS]/[SEP] and truncates
    (:func:`taa.text.load_tokenizer`). Sentences are batched by length, so each
    batch pads little; the result is in the input order.
    """
    encodings = tokenizer.encode_batch(list(sentences))
    order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))  # longest first
    output = np.empty((len(encodings), model.config.d_model), dtype=np.float32)
    pad_id = model.config.pad_id

    def padded(rows: list[list[int]], value: int) -> np.ndarray:  # (b, longest)
        longest = max(len(row) for row in rows)
        return np.array([row + [value] * (longest - len(row)) for row in rows], dtype=np.int32)

    for start in range(0, len(order), batch_size):
        batch = [encodings[i] for i in order[start : start + batch_size]]
        input_ids = padded([e.ids for e in batch], pad_id)
        token_types = padded([e.type_ids for e in batch], 0)
        attention_mask = padded([e.attention_mask for e in batch], 0)
        hidden = model(input_ids, attention_mask, token_types, training=False)  # (b, n, d)
        pooled = mean_pool(ops.cast(hidden, "float32"), attention_mask, normalize)
        output[order[start : start + batch_size]] = ops.convert_to_numpy(pooled)
    return output
