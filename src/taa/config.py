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
        _require(
            self.d_model % self.n_heads == 0,
            f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}",
        )
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


def preset(name: str, **overrides: Any) -> Any:
    """The config of a named preset, with fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    cls, fields = PRESETS[name]
    return from_dict(cls, {**fields, **overrides}, prefix="")


def model_config_from_dict(data: dict[str, Any], prefix: str = "model") -> Any:
    """A model section: ``preset: NAME`` plus field overrides, or every field spelled out."""
    data = dict(data)
    name = data.pop("preset", None)
    if name is None:
        return from_dict(TransformerConfig, data, prefix=prefix)
    if name not in PRESETS:
        raise ConfigError(f"{prefix}.preset={name!r} is unknown (known: {', '.join(sorted(PRESETS))})")
    cls, fields = PRESETS[name]
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


TASKS: dict[str, type] = {"copy": CopyTaskConfig, "translation": TranslationTaskConfig}


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
