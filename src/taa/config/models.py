"""Model configurations: one dataclass per family, each checking its own fields.

:class:`BlockConfig` holds what one encoder or decoder layer needs; every family's config
extends it with the rest of its model. A bad value raises :class:`ConfigError` naming
the field, e.g. ``d_model=500 is not divisible by n_heads=8``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from taa.config.coerce import _check_types, _require

Activation = Literal["relu", "gelu", "gelu_tanh", "swiglu", "geglu"]
NormKind = Literal["layer", "rms"]
PositionalKind = Literal["sinusoidal", "learned", "rotary", "relative", "none"]
AttentionImpl = Literal["fused", "readable"]


@dataclass
class BlockConfig:
    """What one encoder or decoder layer needs; every model config extends it."""

    d_model: int = 512  # width of the residual stream (paper: d_model)
    n_heads: int = 8  # attention heads (paper: h)
    n_kv_heads: Optional[int] = None  # key/value heads for grouped-query attention; None = n_heads
    d_ff: int = 2048  # inner width of the position-wise feed-forward (paper: d_ff)
    dropout: float = 0.1  # residual, embedding and feed-forward dropout (paper: P_drop)
    attention_dropout: float = 0.0  # dropout on attention weights
    activation: Activation = "relu"  # feed-forward non-linearity
    norm_first: bool = False  # False: post-norm as in the paper; True: pre-norm
    norm: NormKind = "layer"  # LayerNorm or RMSNorm
    norm_eps: float = 1e-5  # epsilon inside the norm
    bias: bool = True  # biases in attention and feed-forward projections
    attention: AttentionImpl = "fused"  # fused kernels (attention, norms) or the readable references

    def __post_init__(self) -> None:
        _check_types(self)
        self.validate_block()

    def validate_block(self) -> None:
        for name in ("d_model", "n_heads", "d_ff"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        self.validate_head_width()
        if self.n_kv_heads is not None:
            _require(self.n_kv_heads > 0, f"n_kv_heads={self.n_kv_heads} must be positive")
            _require(
                self.n_heads % self.n_kv_heads == 0,
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}",
            )
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            _require(0.0 <= value < 1.0, f"{name}={value} must be in [0, 1)")
        _require(self.norm_eps > 0, f"norm_eps={self.norm_eps} must be positive")

    def validate_head_width(self) -> None:
        """Each head is d_model / n_heads wide (T5Config overrides this: its heads are d_kv wide)."""
        _require(
            self.d_model % self.n_heads == 0,
            f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}",
        )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


@dataclass
class TransformerConfig(BlockConfig):
    """The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017)."""

    source_vocab_size: int = 37000  # source-side vocabulary
    target_vocab_size: int = 37000  # target-side vocabulary
    n_encoder_layers: int = 6  # paper: N
    n_decoder_layers: int = 6  # paper: N
    max_length: int = 512  # longest sequence for learned positions and the sinusoid table
    positional: PositionalKind = "sinusoidal"  # paper §3.5 uses sinusoids
    relative_buckets: int = 32  # T5-style relative bias: number of buckets
    relative_max_distance: int = 128  # T5-style relative bias: distance of the last bucket
    share_embeddings: bool = True  # one embedding matrix for source and target (paper §3.4)
    tie_output: bool = True  # output projection shares the target embedding (paper §3.4)
    final_norm: Optional[bool] = None  # a norm after each stack; None: only when norm_first
    pad_id: int = 0  # padding token id
    bos_id: int = 1  # beginning-of-sequence token id (decoder start)
    eos_id: int = 2  # end-of-sequence token id

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("source_vocab_size", "target_vocab_size", "max_length"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        for name in ("n_encoder_layers", "n_decoder_layers"):
            _require(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0")
        if self.share_embeddings:
            _require(
                self.source_vocab_size == self.target_vocab_size,
                f"share_embeddings=true needs source_vocab_size={self.source_vocab_size} "
                f"to equal target_vocab_size={self.target_vocab_size}",
            )
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            _require(
                0 <= value < self.target_vocab_size,
                f"{name}={value} is outside the target vocabulary of {self.target_vocab_size}",
            )
        if self.positional == "rotary":
            _require(self.head_dim % 2 == 0, f"positional=rotary needs an even head_dim, got {self.head_dim}")

    @property
    def use_final_norm(self) -> bool:
        return self.norm_first if self.final_norm is None else self.final_norm

    @property
    def max_source_length(self) -> Optional[int]:
        """The most source tokens the encoder reads: ``max_length`` when positions come from
        a table (sinusoidal, learned, rotary); None when they are relative or absent."""
        return self.max_length if self.positional in ("sinusoidal", "learned", "rotary") else None


# --------------------------------------------------------------------------------------
# GPT and BERT: a decoder-only language model and a bidirectional encoder
# --------------------------------------------------------------------------------------


def _check_token_ids(config: Any, names: tuple[str, ...]) -> None:
    """Special-token ids that are set must lie inside the vocabulary."""
    for name in names:
        value = getattr(config, name)
        if value is not None:
            _require(
                0 <= value < config.vocab_size,
                f"{name}={value} is outside the vocabulary of {config.vocab_size}",
            )


@dataclass
class GPTConfig(BlockConfig):
    """GPT-2's layout (Radford et al. 2019, §2.3): token + learned position embeddings,
    pre-norm layers of causal self-attention and a tanh-GELU feed-forward, a final norm,
    and an output head tied to the token embedding. Defaults are GPT-2 small."""

    d_model: int = 768  # GPT-2: n_embd
    n_heads: int = 12  # GPT-2: n_head
    d_ff: int = 3072  # GPT-2: n_inner = 4 * n_embd
    dropout: float = 0.1  # GPT-2: resid_pdrop and embd_pdrop
    attention_dropout: float = 0.1  # GPT-2: attn_pdrop
    activation: Activation = "gelu_tanh"  # GPT-2: "gelu_new"
    norm_first: bool = True  # GPT-2 moved the norm to each sub-block's input (§2.3)
    norm_eps: float = 1e-5  # GPT-2: layer_norm_epsilon
    vocab_size: int = 50257
    n_layers: int = 12  # GPT-2: n_layer
    max_length: int = 1024  # the context: positions the model has embeddings for (GPT-2: n_positions)
    tie_output: bool = True  # the output head reuses the token embedding matrix
    positional: Literal["learned", "rotary", "alibi"] = "learned"  # GPT-2: learned; or RoPE, ALiBi in attention
    feed_forward_dropout: float = 0.0  # dropout inside the feed-forward; GPT-2 has none there
    init_std: float = 0.02  # N(0, init_std) initialisation (GPT-2: initializer_range)
    bos_id: Optional[int] = None  # GPT-2: 50256 (<|endoftext|>)
    eos_id: Optional[int] = None  # generation stops here; GPT-2: 50256
    pad_id: Optional[int] = None  # GPT-2 has none; batches pass an attention mask instead

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("vocab_size", "max_length", "init_std"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        _require(self.n_layers >= 0, f"n_layers={self.n_layers} must be >= 0")
        _require(
            0.0 <= self.feed_forward_dropout < 1.0,
            f"feed_forward_dropout={self.feed_forward_dropout} must be in [0, 1)",
        )
        _check_token_ids(self, ("bos_id", "eos_id", "pad_id"))
        if self.positional == "rotary":
            _require(self.head_dim % 2 == 0, f"positional=rotary needs an even head_dim, got {self.head_dim}")


@dataclass
class BertConfig(BlockConfig):
    """BERT (Devlin et al. 2019, §3): word + position + segment embeddings, a post-norm
    encoder with exact GELU, a tanh pooler over the first token, and heads for masked
    language modelling and sequence classification. Defaults are BERT-base."""

    d_model: int = 768  # BERT: hidden_size
    n_heads: int = 12  # BERT: num_attention_heads
    d_ff: int = 3072  # BERT: intermediate_size
    dropout: float = 0.1  # BERT: hidden_dropout_prob
    attention_dropout: float = 0.1  # BERT: attention_probs_dropout_prob
    activation: Activation = "gelu"  # exact GELU (BERT: hidden_act "gelu")
    norm_first: bool = False  # post-norm, as in the original Transformer
    norm_eps: float = 1e-12  # BERT: layer_norm_eps
    vocab_size: int = 30522
    n_layers: int = 12  # BERT: num_hidden_layers
    max_length: int = 512  # BERT: max_position_embeddings
    type_vocab_size: int = 2  # segment (token type) embeddings: sentence A and B
    pad_id: int = 0  # BERT: pad_token_id ([PAD])
    num_labels: int = 2  # outputs of the sequence-classification head
    classifier_dropout: Optional[float] = None  # dropout before the classifier; None = dropout
    # What the classifier reads: "cls" = the pooler on [CLS] (BERT §4.1, transformers'
    # BertForSequenceClassification); "mean" = the mean over real tokens (Sentence-BERT §3),
    # how sentence-embedding checkpoints such as all-MiniLM-L6-v2 were trained.
    classifier_pooling: Literal["cls", "mean"] = "cls"
    feed_forward_dropout: float = 0.0  # dropout inside the feed-forward; BERT has none there
    init_std: float = 0.02  # N(0, init_std) initialisation (BERT: initializer_range)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("vocab_size", "max_length", "type_vocab_size", "num_labels", "init_std"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        _require(self.n_layers >= 0, f"n_layers={self.n_layers} must be >= 0")
        for name in ("feed_forward_dropout", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None:
                _require(0.0 <= value < 1.0, f"{name}={value} must be in [0, 1)")
        _require(
            self.activation in ("relu", "gelu", "gelu_tanh"),
            f"activation={self.activation!r}: BERT's masked-LM head needs an ungated one (relu, gelu, gelu_tanh)",
        )
        _check_token_ids(self, ("pad_id",))


# --------------------------------------------------------------------------------------
# T5: an encoder-decoder with relative position bias, RMS norm and no biases
# --------------------------------------------------------------------------------------

T5_FEED_FORWARDS = ("relu", "geglu", "swiglu", "gelu", "gelu_tanh")


@dataclass
class T5Config(BlockConfig):
    """T5 (Raffel et al. 2020, §2.1 "Model"): a pre-norm encoder-decoder with a scale-only
    layer norm, no biases, no absolute positions but a learned bucketed bias per head added
    to the attention logits (shared by all layers of a stack), and no 1/sqrt(d_k) scaling.
    Defaults are t5-small (v1.0).

    v1.0 has a ReLU feed-forward and an output layer tied to the token embedding, whose
    input is scaled by d_model**-0.5; v1.1 a gated-GELU one (``geglu``) and its own
    output layer. Each of the ``n_heads`` heads is ``d_kv`` wide, and ``n_heads * d_kv``
    need not equal ``d_model`` (t5-v1_1-small: 6 heads of 64 in 512).
    """

    d_model: int = 512  # HF: d_model
    n_heads: int = 8  # HF: num_heads
    d_kv: int = 64  # width of each head (HF: d_kv)
    d_ff: int = 2048  # HF: d_ff
    dropout: float = 0.1  # HF: dropout_rate, on embeddings, residuals, the FFN hidden layer, stack outputs
    attention_dropout: float = 0.1  # T5 drops attention weights at dropout_rate too
    activation: Activation = "relu"  # v1.0 "relu"; v1.1 "geglu" (HF feed_forward_proj "gated-gelu")
    norm_first: bool = True  # T5 is pre-norm
    norm: NormKind = "rms"  # T5's layer norm: scale only, no mean, no bias
    norm_eps: float = 1e-6  # HF: layer_norm_epsilon
    bias: bool = False  # T5 has no biases
    vocab_size: int = 32128  # HF: vocab_size (32000 SentencePiece pieces, padded)
    n_encoder_layers: int = 6  # HF: num_layers
    n_decoder_layers: int = 6  # HF: num_decoder_layers
    relative_buckets: int = 32  # HF: relative_attention_num_buckets
    relative_max_distance: int = 128  # HF: relative_attention_max_distance
    tie_word_embeddings: bool = True  # output layer = token embedding (v1.0); False: its own (v1.1)
    scale_decoder_outputs: Optional[bool] = None  # decoder output * d_model**-0.5 before the head; None: tied
    max_length: int = 512  # longest output decoding allows by default (T5 has no position table)
    pad_id: int = 0  # HF: pad_token_id
    eos_id: int = 1  # HF: eos_token_id
    decoder_start_id: int = 0  # the decoder's first input; T5 uses the pad id (HF: decoder_start_token_id)

    def validate_head_width(self) -> None:
        _require(self.d_kv > 0, f"d_kv={self.d_kv} must be positive")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("vocab_size", "max_length", "n_encoder_layers", "n_decoder_layers"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        _require(self.norm_first, "norm_first=false: T5 is pre-norm (norm_first must be true)")
        _require(
            self.activation in T5_FEED_FORWARDS,
            f"activation={self.activation!r} is not one of {', '.join(map(repr, T5_FEED_FORWARDS))}",
        )
        _require(self.relative_buckets >= 4, f"relative_buckets={self.relative_buckets} must be >= 4")
        _require(
            self.relative_max_distance > self.relative_buckets // 2,
            f"relative_max_distance={self.relative_max_distance} must exceed relative_buckets/2="
            f"{self.relative_buckets // 2} (the exact buckets)",
        )
        _check_token_ids(self, ("pad_id", "eos_id", "decoder_start_id"))

    @property
    def head_dim(self) -> int:
        return self.d_kv

    @property
    def bos_id(self) -> int:
        """The decoder's start token, under the name the decoding functions read."""
        return self.decoder_start_id

    @property
    def max_source_length(self) -> Optional[int]:
        """None: relative position biases bound no source length (max_length bounds only decoding)."""
        return None

    @property
    def scale_output(self) -> bool:
        """Whether the decoder output is multiplied by d_model**-0.5 before the output layer."""
        return self.tie_word_embeddings if self.scale_decoder_outputs is None else self.scale_decoder_outputs



# --------------------------------------------------------------------------------------
# ViT: the Transformer encoder over image patches
# --------------------------------------------------------------------------------------


@dataclass
class ViTConfig(BlockConfig):
    """The Vision Transformer (Dosovitskiy et al. 2021, §3.1): an image cut into
    ``patch_size`` x ``patch_size`` patches, each projected to ``d_model``, a learned class
    token in front, learned positions added, then a pre-norm encoder with GELU feed-forwards
    and a final LayerNorm. Defaults are ViT-B/16 at 224 x 224 (transformers' ViTConfig).

    The classifier reads the class token's final state (``pooling="cls"``, the paper's) or
    the mean of the patch tokens' (``"mean"``, the paper's global average pooling, §D.3).
    ``patch_overlap`` > 0 widens each patch's projection by that many pixels on every side
    (overlapping patches, zero-padded at the border; the grid stays the same): the locality
    a small data set gives a ViT too little of. transformers' ViT has no such option.
    """

    d_model: int = 768  # HF: hidden_size
    n_heads: int = 12  # HF: num_attention_heads
    d_ff: int = 3072  # HF: intermediate_size
    dropout: float = 0.0  # HF: hidden_dropout_prob
    attention_dropout: float = 0.0  # HF: attention_probs_dropout_prob
    activation: Activation = "gelu"  # HF: hidden_act "gelu" (exact)
    norm_first: bool = True  # ViT is pre-norm (§3.1, Eq. 2-3)
    norm_eps: float = 1e-12  # HF: layer_norm_eps
    n_layers: int = 12  # HF: num_hidden_layers
    image_size: int = 224  # height and width the position table is made for (HF: image_size)
    patch_size: int = 16  # HF: patch_size
    num_channels: int = 3  # HF: num_channels
    num_labels: int = 1000  # outputs of the classification head
    pooling: Literal["cls", "mean"] = "cls"  # what the classifier reads
    patch_overlap: int = 0  # pixels each patch's projection also reads past each side (0 = the paper's)
    classifier_dropout: float = 0.0  # dropout before the classifier
    init_std: float = 0.02  # truncated-normal initialisation (HF: initializer_range)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("image_size", "patch_size", "num_channels", "num_labels", "init_std"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        _require(self.n_layers >= 0, f"n_layers={self.n_layers} must be >= 0")
        _require(
            self.image_size % self.patch_size == 0,
            f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}",
        )
        _require(0.0 <= self.classifier_dropout < 1.0, f"classifier_dropout={self.classifier_dropout} must be in [0, 1)")
        _require(self.patch_overlap >= 0, f"patch_overlap={self.patch_overlap} must be >= 0")

    @property
    def grid(self) -> int:
        """Patches along each side of an ``image_size`` image."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid


# --------------------------------------------------------------------------------------
# Decision Transformer: a causal GPT over (return-to-go, state, action) tokens
# --------------------------------------------------------------------------------------


@dataclass
class DecisionTransformerConfig(BlockConfig):
    """The Decision Transformer (Chen et al. 2021, §3): a trajectory is read as tokens
    (R_1, s_1, a_1, R_2, s_2, a_2, ...), each embedded by its own linear map plus a learned
    embedding of its time step, and a causal GPT-2 predicts a_t from the tokens up to s_t.
    Defaults are transformers' DecisionTransformerConfig (3 layers, 128 wide, 1 head, ReLU).

    ``discrete``: the actions are ``act_dim`` choices, fed one-hot and predicted as logits
    (CartPole); else they are vectors of ``act_dim`` numbers, predicted through tanh when
    ``action_tanh`` (Pendulum, MuJoCo). ``context`` is the number of time steps the model
    reads (K in the paper; 3K tokens).
    """

    d_model: int = 128  # HF: hidden_size
    n_heads: int = 1  # HF: n_head
    d_ff: int = 512  # HF: n_inner (None: 4 * hidden_size)
    dropout: float = 0.1  # HF: resid_pdrop and embd_pdrop
    attention_dropout: float = 0.1  # HF: attn_pdrop
    activation: Activation = "relu"  # HF: activation_function
    norm_first: bool = True  # GPT-2's pre-norm layers and final norm
    norm_eps: float = 1e-5  # HF: layer_norm_epsilon
    n_layers: int = 3  # HF: n_layer
    state_dim: int = 17  # HF: state_dim
    act_dim: int = 4  # HF: act_dim
    max_ep_len: int = 4096  # time steps the timestep embedding covers (HF: max_ep_len)
    context: int = 20  # time steps read at once (the paper's K)
    discrete: bool = False  # one-hot actions in, logits out
    action_tanh: bool = True  # continuous actions: squash the prediction into [-1, 1]
    init_std: float = 0.02  # HF: initializer_range

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("state_dim", "act_dim", "max_ep_len", "context", "init_std"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        _require(self.n_layers >= 0, f"n_layers={self.n_layers} must be >= 0")
        _require(not (self.discrete and self.action_tanh),
                 "discrete=true predicts logits: action_tanh must be false")
