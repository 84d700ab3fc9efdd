"""Typed configurations, named presets and their YAML/JSON round trip.

Every model, training run and task is described by a dataclass here. Each
dataclass checks its own fields when it is made: a wrong type or a bad value
raises :class:`ConfigError` with the field's dotted name and the reason, e.g.
``model.d_model=500 is not divisible by model.n_heads=8``.

This module imports no framework, so ``import taa.config`` is cheap and safe.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


# --------------------------------------------------------------------------------------
# Generic machinery: type checks from the annotations, dict/YAML/JSON round trip.
# --------------------------------------------------------------------------------------


def _qualify(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a type annotation; build nested dataclasses from dicts."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}={value!r} has the wrong type")
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{where}={value!r} is not one of {allowed}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} should be a list")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        items = [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} should be a mapping")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} should be a mapping of fields, got {value!r}")
        return from_dict(annotation, value, prefix=where)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} should be true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}={value!r} should be an integer")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}={value!r} should be a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}={value!r} should be a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r} should be a string")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and bad values name the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or cls.__name__} should be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        names = ", ".join(_qualify(prefix, k) for k in unknown)
        raise ConfigError(f"unknown field {names} (known: {', '.join(sorted(known))})")
    values = {name: _coerce(value, hints[name], _qualify(prefix, name)) for name, value in data.items()}
    try:
        return cls(**values)
    except ConfigError as error:  # a validator names a bare field: put the section in front
        raise ConfigError(_prefix_fields(str(error), prefix)) from None


def _prefix_fields(message: str, prefix: str) -> str:
    """Validators name bare fields (``d_model=500 ...``); put the section in front."""
    if not prefix or message.startswith(prefix + "."):
        return message
    return f"{prefix}: {message}"


def to_dict(config: Any) -> dict[str, Any]:
    """A plain dict (lists, not tuples) that ``from_dict`` turns back into ``config``."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def _check_types(config: Any) -> None:
    """Run the annotation checks on a dataclass made directly in Python."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        if f.init:
            object.__setattr__(config, f.name, _coerce(getattr(config, f.name), hints[f.name], f.name))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def dumps(config: Any, format: Literal["yaml", "json"] = "yaml") -> str:
    """A config as YAML or JSON text."""
    data = to_dict(config)
    if isinstance(config, RecipeConfig):  # the model section names its type (gpt, bert, t5) so it reads back
        data["model"] = model_config_to_dict(config.model)
    return yaml.safe_dump(data, sort_keys=False) if format == "yaml" else json.dumps(data, indent=2) + "\n"


def save(config: Any, path: str | Path) -> None:
    """Write a config as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
    path = Path(path)
    path.write_text(dumps(config, "yaml" if path.suffix in (".yaml", ".yml") else "json"))


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file into a dict; a parse error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}, line {error.lineno}: {error.msg}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level")
    return data


def parse_overrides(pairs: typing.Iterable[str]) -> dict[str, Any]:
    """``["model.d_model=256", "train.steps=10"]`` -> nested dict; values parsed as YAML."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {pair!r}: {part} is not a section")
        node[leaf] = value
    return nested


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------------------
# Model configurations
# --------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------
# GPT and BERT (issue 4): a decoder-only language model and a bidirectional encoder
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
# T5 (issue 4): an encoder-decoder with relative position bias, RMS norm and no biases
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
    def scale_output(self) -> bool:
        """Whether the decoder output is multiplied by d_model**-0.5 before the output layer."""
        return self.tie_word_embeddings if self.scale_decoder_outputs is None else self.scale_decoder_outputs


# Named presets are data: a dict of fields for a config class.
PRESETS: dict[str, tuple[type, dict[str, Any]]] = {
    # Paper Table 3, "base": N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1, shared 37000 BPE vocabulary.
    "vaswani-base": (TransformerConfig, dict(
        d_model=512, n_heads=8, d_ff=2048, dropout=0.1,
        n_encoder_layers=6, n_decoder_layers=6,
        source_vocab_size=37000, target_vocab_size=37000,
    )),
    # Paper Table 3, "big": d_model=1024, d_ff=4096, h=16, P_drop=0.3.
    "vaswani-big": (TransformerConfig, dict(
        d_model=1024, n_heads=16, d_ff=4096, dropout=0.3,
        n_encoder_layers=6, n_decoder_layers=6,
        source_vocab_size=37000, target_vocab_size=37000,
    )),
    # Small ones for tests and the copy task.
    "vaswani-tiny": (TransformerConfig, dict(
        d_model=32, n_heads=4, d_ff=64, dropout=0.0,
        n_encoder_layers=2, n_decoder_layers=2,
        source_vocab_size=50, target_vocab_size=50, max_length=64,
    )),
    "copy-task": (TransformerConfig, dict(
        d_model=64, n_heads=4, d_ff=128, dropout=0.0,
        n_encoder_layers=2, n_decoder_layers=2,
        source_vocab_size=11, target_vocab_size=11, max_length=32,
        pad_id=0, bos_id=1, eos_id=1,
    )),
}

# GPT and BERT presets (issue 4). gpt2-small and bert-base have as many parameters as
# transformers' GPT2LMHeadModel (tied head) and BertModel (with pooler) at the same
# config: 124,439,808 and 109,482,240 (tests/torch/models/test_gpt.py, test_bert.py).
PRESETS.update({
    # GPT-2 small: 12 layers, 768 wide, 12 heads, context 1024, 50257 byte-level BPE tokens.
    "gpt2-small": (GPTConfig, dict(
        d_model=768, n_heads=12, d_ff=3072, n_layers=12, max_length=1024, vocab_size=50257,
        dropout=0.1, attention_dropout=0.1, bos_id=50256, eos_id=50256,
    )),
    # nanoGPT's shakespeare_char: 6 layers, 6 heads, 384 wide, context 256, 65 characters.
    "gpt-shakespeare-char": (GPTConfig, dict(
        d_model=384, n_heads=6, d_ff=1536, n_layers=6, max_length=256, vocab_size=65,
        dropout=0.2, attention_dropout=0.2,
    )),
    "gpt-tiny": (GPTConfig, dict(
        d_model=32, n_heads=4, d_ff=128, n_layers=2, max_length=64, vocab_size=64,
        dropout=0.0, attention_dropout=0.0,
    )),
    # BERT-base: 12 layers, 768 wide, 12 heads, 512 positions, 30522 WordPiece tokens.
    "bert-base": (BertConfig, dict(
        d_model=768, n_heads=12, d_ff=3072, n_layers=12, max_length=512, vocab_size=30522,
        dropout=0.1, attention_dropout=0.1,
    )),
    # all-MiniLM-L6-v2's shape: 6 layers, 384 wide, 12 heads of 32, BERT's uncased vocabulary.
    "bert-minilm-l6": (BertConfig, dict(
        d_model=384, n_heads=12, d_ff=1536, n_layers=6, max_length=512, vocab_size=30522,
        dropout=0.1, attention_dropout=0.1,
    )),
    "bert-tiny": (BertConfig, dict(
        d_model=32, n_heads=4, d_ff=64, n_layers=2, max_length=64, vocab_size=100,
        dropout=0.0, attention_dropout=0.0,
    )),
})

# T5 presets (issue 4). t5-small has as many parameters as transformers'
# T5ForConditionalGeneration at the same config: 60,506,624 (tests/torch/models/test_t5.py).
PRESETS.update({
    # t5-small (v1.0): 6+6 layers, 512 wide, 8 heads of 64, ReLU FFN of 2048, tied output layer.
    "t5-small": (T5Config, dict(
        d_model=512, n_heads=8, d_kv=64, d_ff=2048, n_encoder_layers=6, n_decoder_layers=6,
        vocab_size=32128, activation="relu", tie_word_embeddings=True, dropout=0.1, attention_dropout=0.1,
    )),
    # t5-v1_1-small: 8+8 layers, 512 wide, 6 heads of 64 (384 != 512), gated-GELU FFN of 1024, own output layer.
    "t5-v1_1-small": (T5Config, dict(
        d_model=512, n_heads=6, d_kv=64, d_ff=1024, n_encoder_layers=8, n_decoder_layers=8,
        vocab_size=32128, activation="geglu", tie_word_embeddings=False, dropout=0.1, attention_dropout=0.1,
    )),
    "t5-tiny": (T5Config, dict(
        d_model=32, n_heads=4, d_kv=8, d_ff=64, n_encoder_layers=2, n_decoder_layers=2,
        vocab_size=100, relative_buckets=8, relative_max_distance=16, max_length=64,
        dropout=0.0, attention_dropout=0.0,
    )),
    "t5-v1_1-tiny": (T5Config, dict(
        d_model=32, n_heads=3, d_kv=8, d_ff=48, n_encoder_layers=2, n_decoder_layers=3,
        vocab_size=100, relative_buckets=8, relative_max_distance=16, max_length=64,
        activation="geglu", tie_word_embeddings=False, dropout=0.0, attention_dropout=0.0,
    )),
})

# The config class of a model section's ``type: NAME`` (sections without a preset).
MODEL_TYPES: dict[str, type] = {"transformer": TransformerConfig, "gpt": GPTConfig, "bert": BertConfig, "t5": T5Config}


def model_type(config: Any) -> str:
    """The ``type`` name of a model config (``gpt`` for a :class:`GPTConfig`)."""
    for name, cls in MODEL_TYPES.items():
        if type(config) is cls:
            return name
    raise ConfigError(f"{type(config).__name__} is not a model config (known: {', '.join(MODEL_TYPES)})")


def model_config_to_dict(config: Any) -> dict[str, Any]:
    """A model config as a section ``model_config_from_dict`` reads back: its ``type`` and every field."""
    return {"type": model_type(config), **to_dict(config)}


def preset(name: str, **overrides: Any) -> Any:
    """The config of a named preset, with fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    cls, fields = PRESETS[name]
    return from_dict(cls, {**fields, **overrides}, prefix="")


def model_config_from_dict(data: dict[str, Any], prefix: str = "model") -> Any:
    """A model section: ``preset: NAME`` plus field overrides, or every field spelled out.

    ``type: gpt|bert|...`` (a key of ``MODEL_TYPES``) picks the config class of a
    section without a preset (default ``transformer``); beside a preset it must agree.
    """
    data = dict(data)
    name = data.pop("preset", None)
    kind = data.pop("type", None)
    if kind is not None and kind not in MODEL_TYPES:
        raise ConfigError(f"{_qualify(prefix, 'type')}={kind!r} is not one of {', '.join(map(repr, MODEL_TYPES))}")
    if name is None:
        return from_dict(MODEL_TYPES[kind or "transformer"], data, prefix=prefix)
    if name not in PRESETS:
        raise ConfigError(f"{prefix}.preset={name!r} is unknown (known: {', '.join(sorted(PRESETS))})")
    cls, fields = PRESETS[name]
    if kind is not None and MODEL_TYPES[kind] is not cls:
        raise ConfigError(f"{_qualify(prefix, 'type')}={kind!r} does not match preset {name!r} ({cls.__name__})")
    return from_dict(cls, {**fields, **data}, prefix=prefix)


# --------------------------------------------------------------------------------------
# Training and task configurations
# --------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """The optimisation run: steps, batches, optimizer and schedule (paper §5.3)."""

    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # sequences per batch
    lr: float = 1.0  # peak scale: the warm-up schedule multiplies it (paper: lrate formula)
    schedule: Literal["noam", "cosine", "constant"] = "noam"  # paper §5.3 is "noam"
    warmup_steps: int = 400  # paper: warmup_steps=4000
    min_lr_ratio: float = 0.0  # cosine: floor as a fraction of the peak
    adam_beta1: float = 0.9  # paper: beta1=0.9
    adam_beta2: float = 0.98  # paper: beta2=0.98
    adam_eps: float = 1e-9  # paper: epsilon=1e-9
    weight_decay: float = 0.0  # decoupled weight decay (AdamW); 0 = Adam
    optimizer: Literal["adam", "muon"] = "adam"  # adam: Adam(W); muon: Muon on the layers' matrices, AdamW elsewhere
    muon_momentum: float = 0.95  # Muon's Nesterov momentum mu (Jordan et al. 2024)
    layer_lr_decay: float = 1.0  # fine-tuning: each layer below the top learns this much slower (1 = off)
    label_smoothing: float = 0.0  # paper §5.4: 0.1
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    grad_accumulation: int = 1  # batches whose gradients add up to one optimizer step
    dtype: Literal["float32", "bfloat16"] = "float32"  # bfloat16: autocast matmuls (mixed precision)
    seed: int = 0  # seeds data, initialisation and dropout
    threads: int = 2  # torch CPU threads (2 is fastest on the reference 2-core machine)
    log_every: int = 10  # steps between progress updates
    eval_every: int = 0  # steps between validations; 0 = only at the end
    checkpoint_every: int = 0  # steps between resumable checkpoints; 0 = at each validation
    select_metric: str = "val_loss"  # the validation metric that ranks checkpoints
    select_mode: Literal["min", "max"] = "min"  # whether lower or higher select_metric is better
    keep_best: int = 1  # best checkpoints kept (paper §6.1 averages the last 5 or 20)
    average_best: bool = False  # final weights = average of the kept best checkpoints
    early_stopping: int = 0  # stop after this many validations without improvement; 0 = never
    max_minutes: float = 0.0  # wall-time budget for training; 0 = none

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("steps", "batch_size", "log_every", "threads", "grad_accumulation", "keep_best"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        for name in ("eval_every", "checkpoint_every", "early_stopping"):
            _require(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0")
        _require(self.max_minutes >= 0, f"max_minutes={self.max_minutes} must be >= 0")
        _require(self.lr > 0, f"lr={self.lr} must be positive")
        _require(self.warmup_steps >= 0, f"warmup_steps={self.warmup_steps} must be >= 0")
        _require(0.0 <= self.label_smoothing < 1.0, f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        _require(self.grad_clip >= 0, f"grad_clip={self.grad_clip} must be >= 0")
        _require(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        _require(0.0 <= self.muon_momentum < 1.0, f"muon_momentum={self.muon_momentum} must be in [0, 1)")
        _require(0.0 < self.layer_lr_decay <= 1.0, f"layer_lr_decay={self.layer_lr_decay} must be in (0, 1]")
        if self.schedule == "noam":
            _require(self.warmup_steps > 0, "schedule=noam needs warmup_steps > 0")


@dataclass
class CopyTaskConfig:
    """The Annotated Transformer's synthetic copy task: the target repeats the source.

    Symbols are drawn from 2..vocab_size-1; id 1 starts every sequence (it is also
    the decoder start token) and id 0 pads, as in the Annotated Transformer.
    """

    length: int = 10  # tokens per sequence, the start symbol included
    eval_sequences: int = 200  # held-out sequences for the exact-match score

    def __post_init__(self) -> None:
        _check_types(self)
        _require(self.length >= 2, f"length={self.length} must be >= 2")
        _require(self.eval_sequences > 0, f"eval_sequences={self.eval_sequences} must be positive")


@dataclass
class TranslationTaskConfig:
    """Machine translation from line-aligned parallel text (Multi30k by default).

    Data is found in ``dir``, else in ``$TAA_DATA``, else downloaded into ``cache_dir``.
    ``*_files`` name any other corpus: ``[source_file, target_file]``, plain or gzip.
    """

    dir: str = ""  # a folder holding multi30k/; "" = $TAA_DATA, else download
    cache_dir: str = ""  # where a download goes; "" = ~/.cache/taa/data
    source_lang: str = "de"
    target_lang: str = "en"
    train_split: str = "train"
    valid_split: str = "val"
    test_split: str = "test_2016_flickr"
    train_files: list[str] = field(default_factory=list)  # [source, target] instead of a Multi30k split
    valid_files: list[str] = field(default_factory=list)
    test_files: list[str] = field(default_factory=list)
    max_train_pairs: int = 0  # use only the first N training pairs; 0 = all
    max_valid_pairs: int = 0  # use only the first N validation pairs; 0 = all
    max_test_pairs: int = 0  # use only the first N test pairs; 0 = all
    vocab_size: int = 8000  # BPE vocabulary (per side when not joint)
    joint_vocab: bool = True  # one BPE vocabulary for both languages (needed to share embeddings)
    min_frequency: int = 2  # a BPE merge must occur this often
    max_tokens: int = 4096  # padded tokens per batch on each side (paper §5.1: ~25000)
    bleu_sentences: int = 200  # validation BLEU on the first N validation sentences, greedy; 0 = off
    beam: int = 4  # beam size for the final test evaluation (paper §6.1: 4)
    length_penalty: float = 0.6  # GNMT length penalty alpha (paper §6.1: 0.6)
    max_extra: int = 50  # decode up to source length + max_extra tokens (paper §6.1: 50)

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("train_files", "valid_files", "test_files"):
            files = getattr(self, name)
            _require(len(files) in (0, 2), f"{name} needs [source_file, target_file], got {files!r}")
        for name in ("max_train_pairs", "max_valid_pairs", "max_test_pairs", "bleu_sentences"):
            _require(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0")
        for name in ("vocab_size", "max_tokens", "beam"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        _require(self.vocab_size >= 16, f"vocab_size={self.vocab_size} is too small (>= 16)")
        _require(self.length_penalty >= 0, f"length_penalty={self.length_penalty} must be >= 0")


# --------------------------------------------------------------------------------------
# Tasks of issue 4: language modelling, masked LM, sentence classification, text-to-text
# --------------------------------------------------------------------------------------


@dataclass
class LanguageModelTaskConfig:
    """Next-token prediction on running text (nanoGPT's Tiny Shakespeare by default).

    The text is ``file``, else ``dir``/tinyshakespeare/input.txt, else the same under
    ``$TAA_DATA``. The first ``train_fraction`` of its characters train, the rest
    validate. Batches are ``train.batch_size`` random windows of ``block_size`` tokens.
    """

    file: str = ""  # any UTF-8 text file; "" = Tiny Shakespeare from dir or $TAA_DATA
    dir: str = ""  # a data folder holding tinyshakespeare/input.txt; "" = $TAA_DATA
    train_fraction: float = 0.9  # nanoGPT: the first 90% of the characters train
    tokenizer: Literal["char", "bpe"] = "char"  # one id per character, or byte-level BPE
    vocab_size: int = 1024  # byte-level BPE vocabulary (tokenizer: bpe): 260 bytes and specials, then merges
    min_frequency: int = 2  # a BPE merge must occur this often
    block_size: int = 0  # context: tokens the model reads per window (nanoGPT: block_size); 0 = model.max_length
    eval_batches: int = 20  # validation loss: the mean over this fixed set of batches; 0 = every validation token
    sample_tokens: int = 300  # length of the text sample generated at the end; 0 = none
    sample_prompt: str = "\n"  # what the sample continues (nanoGPT's sample.py starts at "\n")
    temperature: float = 0.8  # sampling temperature of the sample
    top_k: int = 200  # sample only among the k most likely tokens; 0 = all

    def __post_init__(self) -> None:
        _check_types(self)
        _require(0.0 < self.train_fraction < 1.0, f"train_fraction={self.train_fraction} must be in (0, 1)")
        _require(
            self.tokenizer != "bpe" or self.vocab_size > 260,
            f"vocab_size={self.vocab_size} must exceed 260 (256 bytes and 4 special tokens)",
        )
        _require(self.min_frequency > 0, f"min_frequency={self.min_frequency} must be positive")
        for name in ("block_size", "eval_batches", "sample_tokens", "top_k"):
            _require(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0")
        _require(self.temperature > 0, f"temperature={self.temperature} must be positive")
        _require(self.sample_tokens == 0 or self.sample_prompt != "", "sample_prompt='' is empty: sampling needs a token")


@dataclass
class MaskedLMTaskConfig:
    """BERT's masked language model (Devlin et al. 2019, §3.1, "Task #1") from scratch.

    Text and split as :class:`LanguageModelTaskConfig`; a byte-level BPE vocabulary
    with ``<mask>`` is learned on the training part. Each sequence is ``<s>``, a
    random window of running text, ``</s>``: ``max_length`` tokens in all.
    """

    file: str = ""  # any UTF-8 text file; "" = Tiny Shakespeare from dir or $TAA_DATA
    dir: str = ""  # a data folder holding tinyshakespeare/input.txt; "" = $TAA_DATA
    train_fraction: float = 0.9  # the first part of the characters trains, the rest validates
    vocab_size: int = 2000  # BPE vocabulary, special tokens included
    min_frequency: int = 2  # a BPE merge must occur this often
    max_length: int = 128  # tokens per sequence, <s> and </s> included
    mask_probability: float = 0.15  # BERT: 15% of the tokens are chosen for prediction
    mask_token_fraction: float = 0.8  # of the chosen: replaced by <mask> (BERT: 80%)
    random_token_fraction: float = 0.1  # of the chosen: replaced by a random token (BERT: 10%)
    eval_batches: int = 10  # validation: this fixed set of batches, masked the same way every time

    def __post_init__(self) -> None:
        _check_types(self)
        _require(0.0 < self.train_fraction < 1.0, f"train_fraction={self.train_fraction} must be in (0, 1)")
        _require(
            self.vocab_size > 261, f"vocab_size={self.vocab_size} must exceed 261 (256 bytes and 5 special tokens)"
        )
        _require(self.max_length >= 3, f"max_length={self.max_length} must be >= 3 (<s>, a token, </s>)")
        for name in ("eval_batches", "min_frequency"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        _require(0.0 < self.mask_probability < 1.0, f"mask_probability={self.mask_probability} must be in (0, 1)")
        for name in ("mask_token_fraction", "random_token_fraction"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"{name}={value} must be in [0, 1]")
        _require(
            self.mask_token_fraction + self.random_token_fraction <= 1.0,
            f"mask_token_fraction={self.mask_token_fraction} + random_token_fraction="
            f"{self.random_token_fraction} must be <= 1",
        )


@dataclass
class ClassificationTaskConfig:
    """Sentence classification (GLUE SST-2 by default): fine-tune BERT (Devlin et al. 2019, §4.1).

    Rows come from ``train_file``/``valid_file`` (``sentence<TAB>label`` TSVs), else
    ``sst2/train.tsv`` and ``sst2/dev.tsv`` under ``dir`` or ``$TAA_DATA``. The model
    starts from ``pretrained`` (a Hugging Face BERT folder, or the name of an installed
    package with one in its ``model/`` folder) with a new classifier head, or from
    scratch as the model section says when ``pretrained`` is empty.
    """

    dir: str = ""  # a data folder holding sst2/; "" = $TAA_DATA
    train_file: str = ""  # a sentence<TAB>label TSV instead of sst2/train.tsv
    valid_file: str = ""  # a sentence<TAB>label TSV instead of sst2/dev.tsv
    max_train_examples: int = 0  # use only the first N training rows; 0 = all
    max_valid_examples: int = 0  # use only the first N validation rows; 0 = all
    pretrained: str = ""  # Hugging Face BERT folder or package name; "" = from scratch
    tokenizer: str = ""  # a tokenizer.json (or a folder holding one); "" = the pretrained folder's
    max_length: int = 128  # longer sentences are truncated (tokens, [CLS] and [SEP] included)
    pool: int = 50  # sortish batching: sort pools of pool * batch_size sentences by length
    eval_batch_size: int = 128  # sentences per validation batch

    def __post_init__(self) -> None:
        _check_types(self)
        _require(bool(self.pretrained or self.tokenizer), "pretrained and tokenizer are both empty: set one")
        for name in ("max_train_examples", "max_valid_examples"):
            _require(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0")
        _require(self.max_length >= 3, f"max_length={self.max_length} must be >= 3 ([CLS], a token, [SEP])")
        for name in ("pool", "eval_batch_size"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")


@dataclass
class TextToTextTaskConfig(TranslationTaskConfig):
    """T5's text-to-text framing (Raffel et al. 2020, §2.4): the task is named in the input.

    Every field of :class:`TranslationTaskConfig` (data, BPE, batching, BLEU, beam),
    plus the ``prefix`` put in front of every source sentence.
    """

    prefix: str = "translate German to English: "  # T5's task prefix (§2.4)


TASKS: dict[str, type] = {"copy": CopyTaskConfig, "translation": TranslationTaskConfig}
TASKS.update({  # issue 4
    "language_model": LanguageModelTaskConfig,
    "masked_lm": MaskedLMTaskConfig,
    "classification": ClassificationTaskConfig,
    "text_to_text": TextToTextTaskConfig,
})


@dataclass
class RecipeConfig:
    """A whole experiment: which task, which model, how to train (one YAML file)."""

    task: str = "copy"
    model: Any = field(default_factory=lambda: preset("copy-task"))
    train: TrainConfig = field(default_factory=TrainConfig)
    data: Any = field(default_factory=CopyTaskConfig)
    name: str = ""  # a label for the run

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecipeConfig:
        data = dict(data)
        unknown = sorted(set(data) - {"task", "model", "train", "data", "name"})
        if unknown:
            raise ConfigError(f"unknown field {', '.join(unknown)} (known: data, model, name, task, train)")
        task = data.get("task", "copy")
        if task not in TASKS:
            raise ConfigError(f"task={task!r} is not one of {', '.join(repr(t) for t in TASKS)}")
        return cls(
            task=task,
            model=model_config_from_dict(data.get("model", {"preset": "copy-task"})),
            train=from_dict(TrainConfig, data.get("train", {}), prefix="train"),
            data=from_dict(TASKS[task], data.get("data", {}), prefix="data"),
            name=_coerce(data.get("name", ""), str, "name"),
        )

    @classmethod
    def load(cls, path: str | Path, overrides: typing.Iterable[str] = ()) -> RecipeConfig:
        """Read a recipe file and apply ``--set key=value`` overrides; errors name the file."""
        data = merge(read_mapping(path), parse_overrides(overrides))
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
