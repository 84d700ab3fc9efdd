"""BERT: a bidirectional Transformer encoder with masked-LM and classification heads; the
Flax NNX twin of :mod:`taa.torch.models.bert`.

BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding") is the encoder of "Attention Is All You Need" with:

- input embeddings (§3, Figure 2): the sum of token (WordPiece), segment (sentence A/B,
  "token type") and learned position embeddings, then LayerNorm and dropout;
- post-norm encoder layers with the exact GELU in the feed-forward (§3, "Model Architecture");
- a pooler for sentence-level tasks: tanh(W h_[CLS] + b) on the first token's state (§3.2);
- the masked-LM head (§3.1, Task #1; Appendix A.1): dense + GELU + LayerNorm, then a
  decoder tied to the token embedding with a bias of its own;
- sequence classification (§4.1): a linear layer on the pooled, dropped-out [CLS] state.

Class and attribute names are torch's (and transformers'), so :mod:`taa.flax.weights`
gives the state dict of the torch twin. The attention mask is always applied when given
(torch skips an all-ones one, the same numbers): no branch on array values, so the
models trace under ``nnx.jit``.

Sentence embeddings (Reimers & Gurevych 2019, "Sentence-BERT", §3): the mean of the
last hidden states over real tokens, L2-normalised (:func:`mean_pool`,
:func:`sentence_embeddings`), as all-MiniLM-L6-v2 is trained to give.

Notation: ``b`` batch, ``n`` length, ``d`` hidden size, ``v`` vocabulary, ``c`` labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from taa.config import BertConfig
from taa.flax.attention import key_padding_to_attention_mask
from taa.flax.base import Embedding, Linear
from taa.flax.blocks import Encoder, norm_from_config
from taa.flax.dropout import Dropout
from taa.flax.feedforward import ACTIVATIONS
from taa.flax.models.gpt import normal_init_
from taa.flax.models.transformer import ConfigModel, default_rngs, tie
from taa.flax.positional import LearnedPositionalEmbedding


class BertEmbeddings(nnx.Module):
    """word + segment + position embeddings, LayerNorm, dropout (§3, Figure 2)."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs) -> None:
        d = config.d_model
        # padding_idx: the [PAD] row starts at zero and never learns, as torch's
        self.word_embeddings = Embedding(config.vocab_size, d, padding_idx=config.pad_id, rngs=rngs)
        self.position_embeddings = LearnedPositionalEmbedding(config.max_length, d, rngs=rngs)
        self.token_type_embeddings = Embedding(config.type_vocab_size, d, rngs=rngs)
        self.norm = norm_from_config(config, rngs=rngs)
        self.dropout = Dropout(config.dropout, rngs=rngs)

    def __call__(
        self, input_ids: jax.Array, token_type_ids: Optional[jax.Array] = None,
        position_ids: Optional[jax.Array] = None,
    ) -> jax.Array:  # (b, n) -> (b, n, d)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)  # every token in sentence A
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (b, n, d)
        x = self.position_embeddings(x, 0, position_ids)
        return self.dropout(self.norm(x))


class BertPooler(nnx.Module):
    """tanh(W h_0 + b): the first token's ([CLS]) final state, for sentence-level tasks (§3.2)."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs) -> None:
        self.dense = Linear(config.d_model, config.d_model, rngs=rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:  # (b, n, d) -> (b, d)
        return jnp.tanh(self.dense(hidden[:, 0]))


class BertModel(ConfigModel):
    """The BERT encoder: ``model(input_ids, attention_mask, token_type_ids)`` -> last hidden states (b, n, d).

    ``attention_mask`` (b, n) is 1 at real tokens and 0 at padding (None: all real, as in
    transformers; padding is not guessed from ``pad_id``). ``pooler=False`` leaves out the
    pooler, as transformers does under its masked-LM head.

    >>> model = BertModel(taa.config.preset("bert-tiny"), rngs=nnx.Rngs(0))
    >>> hidden = model(jnp.array([[2, 5, 6, 3, 0]]), jnp.array([[1, 1, 1, 1, 0]]))  # (1, 5, 32)
    """

    def __init__(self, config: BertConfig, pooler: bool = True, *, rngs: Optional[nnx.Rngs] = None) -> None:
        rngs = default_rngs(rngs)
        self.config = config
        self.embeddings = BertEmbeddings(config, rngs=rngs)
        self.encoder = Encoder(config, config.n_layers, final_norm=config.norm_first, rngs=rngs)
        self.pooler = BertPooler(config, rngs=rngs) if pooler else None
        normal_init_(self, config.init_std, rngs=rngs)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: Optional[jax.Array] = None,
        token_type_ids: Optional[jax.Array] = None,
        *,
        position_ids: Optional[jax.Array] = None,
    ) -> jax.Array:  # (b, n) -> (b, n, d)
        input_ids = jnp.asarray(input_ids)
        token_type_ids = jnp.asarray(token_type_ids) if token_type_ids is not None else None
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        mask = None
        if attention_mask is not None:
            mask = key_padding_to_attention_mask(jnp.asarray(attention_mask).astype(bool))  # (b, 1, 1, n)
        return self.encoder(x, mask)

    def pool(self, hidden: jax.Array) -> jax.Array:
        """Last hidden states (b, n, d) -> the pooled [CLS] vector (b, d)."""
        if self.pooler is None:
            raise ValueError("this BertModel was built without a pooler (pooler=False)")
        return self.pooler(hidden)

    @property
    def build_options(self) -> dict[str, Any]:
        """What the constructor takes beside the config, to build this model again (``model.yaml``)."""
        return {"pooler": self.pooler is not None}


class BertMaskedLMHead(nnx.Module):
    """Dense + activation + LayerNorm, then the decoder (tied to the word embeddings) plus a bias (§3.1)."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs) -> None:
        self.transform = Linear(config.d_model, config.d_model, rngs=rngs)
        self.activation = ACTIVATIONS[config.activation]
        self.norm = norm_from_config(config, rngs=rngs)
        self.decoder = Linear(config.d_model, config.vocab_size, rngs=rngs)  # weight tied by BertForMaskedLM

    def __call__(self, hidden: jax.Array) -> jax.Array:  # (b, n, d) -> (b, n, v)
        return self.decoder(self.norm(self.activation(self.transform(hidden))))


class BertForMaskedLM(ConfigModel):
    """BERT with the masked-LM head: ``model(input_ids, attention_mask, token_type_ids)`` -> logits (b, n, v)."""

    def __init__(self, config: BertConfig, *, rngs: Optional[nnx.Rngs] = None) -> None:
        rngs = default_rngs(rngs)
        self.config = config
        self.bert = BertModel(config, pooler=False, rngs=rngs)
        self.mlm_head = BertMaskedLMHead(config, rngs=rngs)
        normal_init_(self.mlm_head, config.init_std, rngs=rngs)
        self.mlm_head.decoder.weight = self.bert.embeddings.word_embeddings.weight
        self.tied_weights = tie("bert.embeddings.word_embeddings.weight", "mlm_head.decoder.weight")

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: Optional[jax.Array] = None,
        token_type_ids: Optional[jax.Array] = None,
        *,
        position_ids: Optional[jax.Array] = None,
    ) -> jax.Array:  # (b, n) -> (b, n, v)
        return self.mlm_head(self.bert(input_ids, attention_mask, token_type_ids, position_ids=position_ids))


class BertForSequenceClassification(ConfigModel):
    """BERT with a classifier on the pooled [CLS] state (§4.1): -> logits (b, c).

    ``config.classifier_pooling="mean"`` feeds the classifier the mean of the last hidden
    states over real tokens instead (:func:`mean_pool`, not normalised): the sentence
    vector a Sentence-BERT checkpoint was trained to produce. The pooler is then unused.
    """

    def __init__(self, config: BertConfig, *, rngs: Optional[nnx.Rngs] = None) -> None:
        rngs = default_rngs(rngs)
        self.config = config
        self.bert = BertModel(config, rngs=rngs)
        classifier_dropout = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = Dropout(classifier_dropout, rngs=rngs)
        self.classifier = Linear(config.d_model, config.num_labels, rngs=rngs)
        normal_init_(self.classifier, config.init_std, rngs=rngs)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: Optional[jax.Array] = None,
        token_type_ids: Optional[jax.Array] = None,
        *,
        position_ids: Optional[jax.Array] = None,
    ) -> jax.Array:  # (b, n) -> (b, c)
        hidden = self.bert(input_ids, attention_mask, token_type_ids, position_ids=position_ids)  # (b, n, d)
        if self.config.classifier_pooling == "mean":
            real = attention_mask if attention_mask is not None else jnp.ones(hidden.shape[:2], jnp.int32)
            pooled = mean_pool(hidden, real, normalize=False)  # (b, d)
        else:
            pooled = self.bert.pool(hidden)  # (b, d): tanh(W h_[CLS] + b)
        return self.classifier(self.dropout(pooled))


# --------------------------------------------------------------------------------------
# Sentence embeddings (Sentence-BERT §3: mean pooling)
# --------------------------------------------------------------------------------------


def mean_pool(hidden: jax.Array, attention_mask: jax.Array, normalize: bool = True) -> jax.Array:
    """The mean of the hidden states (b, n, d) over real tokens (mask (b, n) 1 there) -> (b, d),
    L2-normalised unless ``normalize=False``."""
    hidden = jnp.asarray(hidden)
    mask = jnp.asarray(attention_mask).astype(hidden.dtype)[..., None]  # (b, n, 1)
    summed = (hidden * mask).sum(axis=1)  # (b, d)
    pooled = summed / jnp.maximum(mask.sum(axis=1), 1e-9)  # a row without tokens stays zero
    if not normalize:
        return pooled
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)  # as torch's F.normalize


def sentence_embeddings(
    model: BertModel,
    tokenizer,
    sentences: Sequence[str],
    batch_size: int = 32,
    normalize: bool = True,
) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings (len(sentences), d) of a ``BertModel``, as numpy.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` that adds [CLS]/[SEP] and truncates
    (:func:`taa.text.load_tokenizer`). The model is put in eval mode, as torch's is.
    Sentences are batched by length, so each batch pads little; the result is in the
    input order.
    """
    model.eval()
    encodings = tokenizer.encode_batch(list(sentences))
    order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))  # longest first
    output = np.empty((len(encodings), model.config.d_model), dtype=np.float32)
    pad_id = model.config.pad_id

    def padded(rows: list[list[int]], value: int) -> jax.Array:  # (b, longest)
        longest = max(len(row) for row in rows)
        return jnp.asarray([row + [value] * (longest - len(row)) for row in rows], dtype=jnp.int32)

    for start in range(0, len(order), batch_size):
        batch = [encodings[i] for i in order[start : start + batch_size]]
        input_ids = padded([e.ids for e in batch], pad_id)
        token_types = padded([e.type_ids for e in batch], 0)
        attention_mask = padded([e.attention_mask for e in batch], 0)
        hidden = model(input_ids, attention_mask, token_types)  # (b, n, d)
        pooled = mean_pool(hidden.astype(jnp.float32), attention_mask, normalize)
        output[order[start : start + batch_size]] = np.asarray(pooled)
    return output
