"""BERT: a bidirectional Transformer encoder with masked-LM and classification heads.

BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding") is the encoder of "Attention Is All You Need" with:

- input embeddings (§3, Figure 2): the sum of token (WordPiece), segment (sentence A/B,
  "token type") and learned position embeddings, then LayerNorm and dropout;
- post-norm encoder layers with the exact GELU in the feed-forward (§3, "Model Architecture");
- a pooler for sentence-level tasks: tanh(W h_[CLS] + b) on the first token's state (§3.2);
- the masked-LM head (§3.1, Task #1; Appendix A.1): dense + GELU + LayerNorm, then a
  decoder tied to the token embedding with a bias of its own;
- sequence classification (§4.1): a linear layer on the pooled, dropped-out [CLS] state.

Class names follow transformers (``BertModel``, ``BertForMaskedLM``, ...) and module
names map one to one onto theirs (``taa.convert.hf_bert``).

Sentence embeddings (Reimers & Gurevych 2019, "Sentence-BERT", §3): the mean of the
last hidden states over real tokens, L2-normalised (:func:`mean_pool`,
:func:`sentence_embeddings`), as all-MiniLM-L6-v2 is trained to give.

Notation: ``b`` batch, ``n`` length, ``d`` hidden size, ``v`` vocabulary, ``c`` labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taa.config import BertConfig
from taa.torch.attention import key_padding_to_attention_mask
from taa.torch.blocks import Encoder, norm_from_config
from taa.torch.dropout import Dropout
from taa.torch.feedforward import ACTIVATIONS
from taa.torch.models.gpt import normal_init_
from taa.torch.models.transformer import Transformer
from taa.torch.positional import LearnedPositionalEmbedding


class BertEmbeddings(nn.Module):
    """word + segment + position embeddings, LayerNorm, dropout (§3, Figure 2)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        d = config.d_model
        self.word_embeddings = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_id)
        self.position_embeddings = LearnedPositionalEmbedding(config.max_length, d)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.norm = norm_from_config(config)
        self.dropout = Dropout(config.dropout)

    def forward(
        self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None, position_ids: Optional[Tensor] = None
    ) -> Tensor:  # (b, n) -> (b, n, d)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # every token in sentence A
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (b, n, d)
        x = self.position_embeddings(x, 0, position_ids)
        return self.dropout(self.norm(x))


class BertPooler(nn.Module):
    """tanh(W h_0 + b): the first token's ([CLS]) final state, for sentence-level tasks (§3.2);
    ViT's pooler in transformers is the same on its class token."""

    def __init__(self, config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)

    def forward(self, hidden: Tensor) -> Tensor:  # (b, n, d) -> (b, d)
        return torch.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    """The BERT encoder: ``model(input_ids, attention_mask, token_type_ids)`` -> last hidden states (b, n, d).

    ``attention_mask`` (b, n) is 1 at real tokens and 0 at padding (None: all real, as in
    transformers; padding is not guessed from ``pad_id``). ``pooler=False`` leaves out the
    pooler, as transformers does under its masked-LM head.
    """

    def __init__(self, config: BertConfig, pooler: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = Encoder(config, config.n_layers, final_norm=config.norm_first)
        self.pooler = BertPooler(config) if pooler else None
        normal_init_(self, config.init_std)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        token_type_ids: Optional[Tensor] = None,
        *,
        position_ids: Optional[Tensor] = None,
    ) -> Tensor:  # (b, n) -> (b, n, d)
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        mask = None
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            mask = key_padding_to_attention_mask(attention_mask.bool())  # (b, 1, 1, n)
        return self.encoder(x, mask)

    def pool(self, hidden: Tensor) -> Tensor:
        """Last hidden states (b, n, d) -> the pooled [CLS] vector (b, d)."""
        if self.pooler is None:
            raise ValueError(f"this {type(self).__name__} was built without a pooler (pooler=False)")
        return self.pooler(hidden)

    @property
    def build_options(self) -> dict[str, bool]:
        """What the constructor takes beside the config, to build this model again (``model.yaml``)."""
        return {"pooler": self.pooler is not None}

    num_parameters = Transformer.num_parameters
    parameter_breakdown = Transformer.parameter_breakdown


class BertMaskedLMHead(nn.Module):
    """Dense + activation + LayerNorm, then the decoder (tied to the word embeddings) plus a bias (§3.1)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.transform = nn.Linear(config.d_model, config.d_model)
        self.activation = ACTIVATIONS[config.activation]
        self.norm = norm_from_config(config)
        self.decoder = nn.Linear(config.d_model, config.vocab_size)  # weight tied by BertForMaskedLM

    def forward(self, hidden: Tensor) -> Tensor:  # (b, n, d) -> (b, n, v)
        return self.decoder(self.norm(self.activation(self.transform(hidden))))


class BertForMaskedLM(nn.Module):
    """BERT with the masked-LM head: ``model(input_ids, attention_mask, token_type_ids)`` -> logits (b, n, v)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, pooler=False)
        self.mlm_head = BertMaskedLMHead(config)
        normal_init_(self.mlm_head, config.init_std)
        self.mlm_head.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        token_type_ids: Optional[Tensor] = None,
        *,
        position_ids: Optional[Tensor] = None,
    ) -> Tensor:  # (b, n) -> (b, n, v)
        return self.mlm_head(self.bert(input_ids, attention_mask, token_type_ids, position_ids=position_ids))

    num_parameters = Transformer.num_parameters
    parameter_breakdown = Transformer.parameter_breakdown


class BertForSequenceClassification(nn.Module):
    """BERT with a classifier on the pooled [CLS] state (§4.1): -> logits (b, c).

    ``config.classifier_pooling="mean"`` feeds the classifier the mean of the last hidden
    states over real tokens instead (:func:`mean_pool`, not normalised): the sentence
    vector a Sentence-BERT checkpoint was trained to produce. The pooler is then unused.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        classifier_dropout = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = Dropout(classifier_dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        normal_init_(self.classifier, config.init_std)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        token_type_ids: Optional[Tensor] = None,
        *,
        position_ids: Optional[Tensor] = None,
    ) -> Tensor:  # (b, n) -> (b, c)
        hidden = self.bert(input_ids, attention_mask, token_type_ids, position_ids=position_ids)  # (b, n, d)
        if self.config.classifier_pooling == "mean":
            real = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            pooled = mean_pool(hidden, real, normalize=False)  # (b, d)
        else:
            pooled = self.bert.pool(hidden)  # (b, d): tanh(W h_[CLS] + b)
        return self.classifier(self.dropout(pooled))

    num_parameters = Transformer.num_parameters
    parameter_breakdown = Transformer.parameter_breakdown


# --------------------------------------------------------------------------------------
# Sentence embeddings (Sentence-BERT §3: mean pooling)
# --------------------------------------------------------------------------------------


def mean_pool(hidden: Tensor, attention_mask: Tensor, normalize: bool = True) -> Tensor:
    """The mean of the hidden states (b, n, d) over real tokens (mask (b, n) 1 there) -> (b, d),
    L2-normalised unless ``normalize=False``."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (b, n, 1)
    summed = (hidden * mask).sum(dim=1)  # (b, d)
    pooled = summed / mask.sum(dim=1).clamp(min=1e-9)  # a row without tokens stays zero
    return F.normalize(pooled, p=2, dim=-1) if normalize else pooled


@torch.no_grad()
def sentence_embeddings(
    model: BertModel,
    tokenizer,
    sentences: Sequence[str],
    batch_size: int = 32,
    normalize: bool = True,
) -> Tensor:
    """Mean-pooled, L2-normalised embeddings (len(sentences), d) of a ``BertModel``.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` that adds [CLS]/[SEP] and truncates
    (:func:`taa.text.load_tokenizer`). Sentences are batched by length, so each
    batch pads little; the result is in the input order, on the CPU (the model runs on
    its own device).
    """
    model.eval()
    device = next(model.parameters()).device
    encodings = tokenizer.encode_batch(list(sentences))
    order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))  # longest first
    output = torch.empty(len(encodings), model.config.d_model, device="cpu")
    pad_id = model.config.pad_id

    def padded(rows: list[list[int]], value: int) -> Tensor:  # (b, longest) on the model's device
        longest = max(len(row) for row in rows)
        return torch.tensor([row + [value] * (longest - len(row)) for row in rows], dtype=torch.long, device=device)

    for start in range(0, len(order), batch_size):
        batch = [encodings[i] for i in order[start : start + batch_size]]
        input_ids = padded([e.ids for e in batch], pad_id)
        token_types = padded([e.type_ids for e in batch], 0)
        attention_mask = padded([e.attention_mask for e in batch], 0)
        hidden = model(input_ids, attention_mask, token_types)  # (b, n, d)
        pooled = mean_pool(hidden.float(), attention_mask, normalize)
        output[torch.tensor(order[start : start + batch_size], device="cpu")] = pooled.cpu()
    return output
