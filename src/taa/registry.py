"""The model families and tasks taa knows, in one place.

A **family** (``transformer``, ``gpt``, ``bert``, ``t5``) says what its model is: its config
class, the classes that implement it in each framework, whether it encodes a source and
whether it generates text, and its Hugging Face names and converter. Its presets are the
rows of :data:`taa.config.presets.PRESETS` whose class is the family's config.

A **task** (``translation``, ``language_model``, ...) names its data config, the module that
trains it, and the family and class of the model it trains. A family's tasks are the tasks
that name it.

Everything else that lists models or tasks (the recipe's ``type`` and ``task`` fields,
``taa train``, :func:`taa.torch.from_pretrained`, the Hugging Face converters, ``taa models``)
reads it from here. Implementations are import paths (``"taa.torch.models.gpt:GPT"``), so
a framework that is not installed is never imported: this module imports none.

Adding a family is one :func:`register_family` call (with its presets) plus its files:

    register_family(ModelFamily(
        name="toy", config=ToyConfig, description="...", paper="...",
        default_architecture="Toy", architectures={"Toy": {"torch": "my_package.toy:Toy"}},
    ), presets={"toy-tiny": {"d_model": 32}})
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from taa.config.coerce import ConfigError
from taa.config.models import BertConfig, DecisionTransformerConfig, GPTConfig, T5Config, TransformerConfig
from taa.config.models import ViTConfig
from taa.config.presets import PRESETS
from taa.config.tasks import (
    ClassificationTaskConfig,
    CopyTaskConfig,
    ImageClassificationTaskConfig,
    OfflineRLTaskConfig,
    LanguageModelTaskConfig,
    MaskedLMTaskConfig,
    TextToTextTaskConfig,
    TranslationTaskConfig,
)


@dataclass(frozen=True)
class ModelFamily:
    """One model family: its config, its classes per framework, its Hugging Face names."""

    name: str  # the model section's ``type`` (gpt)
    config: type  # its config dataclass (GPTConfig)
    description: str  # one line: what the model is
    paper: str  # the paper it follows
    default_architecture: str  # the class a config of this family builds when nothing else says (GPT)
    architectures: Mapping[str, Mapping[str, str]]  # our class -> {framework: "module.path:ClassName"}
    is_encoder_decoder: bool = False  # encodes a source and decodes the output from it (Transformer, T5)
    generates_text: bool = True  # its default class produces text token by token (BERT's does not)
    embeds_sentences: bool = False  # its encoder gives Sentence-BERT embeddings (``taa embed``)
    truncates_input: bool = False  # a Hugging Face tokenizer cuts its input at config.max_length (BERT's position table)
    hf_model_types: tuple[str, ...] = ()  # Hugging Face config.json ``model_type`` values (gpt2)
    hf_architectures: Mapping[str, str] = field(default_factory=dict)  # transformers class -> our class
    hf_converter: str = ""  # its Hugging Face key maps, framework-neutral (taa.convert.hf_gpt2); "" = none

    def __post_init__(self) -> None:
        where = f"model family {self.name!r}"
        if self.default_architecture not in self.architectures:
            raise ConfigError(
                f"{where}: default_architecture={self.default_architecture!r} is not in its architectures")
        for hf_class, ours in self.hf_architectures.items():
            if ours not in self.architectures:
                raise ConfigError(f"{where}: hf_architectures[{hf_class!r}]={ours!r} is not in its architectures")
        if bool(self.hf_model_types) != bool(self.hf_converter):
            raise ConfigError(f"{where}: hf_model_types and hf_converter go together (give both or neither)")
        for architecture, paths in self.architectures.items():
            for framework, path in paths.items():
                if path.count(":") != 1:
                    raise ConfigError(
                        f"{where}: {architecture} in {framework} is {path!r}, not 'module.path:ClassName'")

    @property
    def frameworks(self) -> tuple[str, ...]:
        """The frameworks that implement at least one of its classes."""
        return tuple(sorted({framework for paths in self.architectures.values() for framework in paths}))


@dataclass(frozen=True)
class TaskSpec:
    """One task: what its data section holds, which module trains it, and on which model."""

    name: str  # the recipe's ``task`` (translation)
    data_config: type  # the class of the recipe's ``data`` section (TranslationTaskConfig)
    module: str  # the module whose ``run(recipe, ...)`` trains it (taa.tasks.translation)
    family: str  # the family of the model it trains (transformer)
    architecture: str  # our class it trains (Transformer)
    description: str  # one line


_FAMILIES: dict[str, ModelFamily] = {}
_TASKS: dict[str, TaskSpec] = {}


# --------------------------------------------------------------------------------------
# Registering
# --------------------------------------------------------------------------------------


def register_family(family: ModelFamily, presets: Optional[Mapping[str, Mapping[str, Any]]] = None) -> ModelFamily:
    """Add a family and its presets (name -> the fields that differ from the config's defaults).

    A name, config class, class name, Hugging Face name or preset that is taken is refused.
    """
    presets = dict(presets or {})
    if family.name in _FAMILIES:
        raise ConfigError(f"model family {family.name!r} is already registered")
    for other in _FAMILIES.values():
        for kind, ours, theirs in (
            ("config class", {family.config.__name__}, {other.config.__name__}),
            ("architecture", set(family.architectures), set(other.architectures)),
            ("Hugging Face model_type", set(family.hf_model_types), set(other.hf_model_types)),
            ("Hugging Face architecture", set(family.hf_architectures), set(other.hf_architectures)),
        ):
            if ours & theirs:
                raise ConfigError(f"{kind} {min(ours & theirs)!r} already belongs to model family {other.name!r}")
    taken = sorted(set(presets) & set(PRESETS))
    if taken:
        raise ConfigError(f"preset {taken[0]!r} already exists")
    _FAMILIES[family.name] = family
    for preset_name, fields in presets.items():
        PRESETS[preset_name] = (family.config, dict(fields))
    return family


def unregister_family(name: str) -> None:
    """Remove a family and its presets (a family that a task still trains is refused)."""
    removed = family(name)
    users = [spec.name for spec in _TASKS.values() if spec.family == name]
    if users:
        raise ConfigError(f"model family {name!r} is trained by task {users[0]!r}: unregister the task first")
    for preset_name in presets(name):
        del PRESETS[preset_name]
    del _FAMILIES[removed.name]


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task; its family must be registered and own its architecture."""
    if spec.name in _TASKS:
        raise ConfigError(f"task {spec.name!r} is already registered")
    owner = family(spec.family)
    if spec.architecture not in owner.architectures:
        raise ConfigError(f"task {spec.name!r}: {spec.architecture!r} is not a class of model family {spec.family!r}")
    _TASKS[spec.name] = spec
    return spec


def unregister_task(name: str) -> None:
    """Remove a task."""
    del _TASKS[task(name).name]


# --------------------------------------------------------------------------------------
# Looking up
# --------------------------------------------------------------------------------------


def families() -> list[ModelFamily]:
    """Every family, in the order they were registered."""
    return list(_FAMILIES.values())


def family(name: str) -> ModelFamily:
    """The family whose ``type`` is ``name``."""
    if name not in _FAMILIES:
        raise ConfigError(f"unknown model family {name!r} (known: {', '.join(_FAMILIES)})")
    return _FAMILIES[name]


def family_of_config(config: Any) -> ModelFamily:
    """The family of a model config (``gpt`` for a :class:`GPTConfig`)."""
    return family_of_config_class(type(config))


def family_of_config_class(cls: type) -> ModelFamily:
    """The family whose config class is ``cls``."""
    for candidate in _FAMILIES.values():
        if cls is candidate.config:
            return candidate
    known = ", ".join(f.config.__name__ for f in _FAMILIES.values())
    raise ConfigError(f"{cls.__name__} is not a model config (known: {known})")


def family_of_architecture(architecture: str) -> ModelFamily:
    """The family that one of our classes (``BertForMaskedLM``) belongs to."""
    for candidate in _FAMILIES.values():
        if architecture in candidate.architectures:
            return candidate
    raise ConfigError(f"architecture={architecture!r} is not one of {', '.join(architectures())}")


def family_of_hf_model_type(model_type: str) -> ModelFamily:
    """The family of a Hugging Face ``model_type`` (``gpt2`` -> gpt)."""
    for candidate in _FAMILIES.values():
        if model_type in candidate.hf_model_types:
            return candidate
    raise ConfigError(f"model_type={model_type!r} is not supported (taa converts {', '.join(hf_model_types())})")


def architectures() -> list[str]:
    """Our class names, family by family."""
    return [name for candidate in _FAMILIES.values() for name in candidate.architectures]


def hf_model_types() -> list[str]:
    """Every Hugging Face ``model_type`` some family converts."""
    return [model_type for candidate in _FAMILIES.values() for model_type in candidate.hf_model_types]


def presets(family_name: str) -> list[str]:
    """The names of a family's presets, in the order of the preset table."""
    config = family(family_name).config
    return [name for name, (cls, _) in PRESETS.items() if cls is config]


def family_of_preset(name: str) -> ModelFamily:
    """The family a preset (``gpt2-small``) belongs to."""
    known = [preset_name for candidate in _FAMILIES.values() for preset_name in presets(candidate.name)]
    if name not in known:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(sorted(known))})")
    return family_of_config_class(PRESETS[name][0])


def task(name: str) -> TaskSpec:
    """The task a recipe's ``task`` names."""
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r} (known: {', '.join(_TASKS)})")
    return _TASKS[name]


def tasks(family_name: Optional[str] = None) -> list[TaskSpec]:
    """Every task, or the tasks that train a model of ``family_name``, in registration order."""
    return [spec for spec in _TASKS.values() if family_name is None or spec.family == family_name]


def implementation(architecture: str, framework: str = "torch") -> type:
    """Our class ``architecture`` in ``framework``, imported now (and only now)."""
    paths = family_of_architecture(architecture).architectures[architecture]
    if framework not in paths:
        raise ConfigError(f"{architecture} has no {framework} implementation (implemented in: {', '.join(paths)})")
    module, _, name = paths[framework].partition(":")
    return getattr(importlib.import_module(module), name)


def summary() -> list[dict[str, Any]]:
    """One row per family: what ``taa models`` prints (and ``taa models --json``)."""
    return [
        {
            "family": candidate.name,
            "description": candidate.description,
            "paper": candidate.paper,
            "config": candidate.config.__name__,
            "presets": presets(candidate.name),
            "tasks": [spec.name for spec in tasks(candidate.name)],
            "architectures": list(candidate.architectures),
            "frameworks": list(candidate.frameworks),
            "hf_model_types": list(candidate.hf_model_types),
            "hf_architectures": list(candidate.hf_architectures),
        }
        for candidate in _FAMILIES.values()
    ]


# --------------------------------------------------------------------------------------
# The families and tasks taa ships
# --------------------------------------------------------------------------------------

register_family(ModelFamily(
    name="transformer",
    config=TransformerConfig,
    description="The encoder-decoder Transformer for sequence-to-sequence tasks",
    paper="Vaswani et al. 2017, Attention Is All You Need",
    default_architecture="Transformer",
    architectures={"Transformer": {"torch": "taa.torch.models.transformer:Transformer",
                                  "keras": "taa.keras.models.transformer:Transformer",
                                  "flax": "taa.flax.models.transformer:Transformer"}},
    is_encoder_decoder=True,
))
register_family(ModelFamily(
    name="gpt",
    config=GPTConfig,
    description="A decoder-only causal language model (GPT-2's layout)",
    paper="Radford et al. 2019, Language Models are Unsupervised Multitask Learners",
    default_architecture="GPT",
    architectures={"GPT": {"torch": "taa.torch.models.gpt:GPT", "keras": "taa.keras.models.gpt:GPT",
                          "flax": "taa.flax.models.gpt:GPT"}},
    hf_model_types=("gpt2",),
    hf_architectures={"GPT2LMHeadModel": "GPT"},
    hf_converter="taa.convert.hf_gpt2",
))
register_family(ModelFamily(
    name="bert",
    config=BertConfig,
    description="A bidirectional encoder with masked-LM and classification heads",
    paper="Devlin et al. 2019, BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
    default_architecture="BertModel",
    architectures={
        "BertModel": {"torch": "taa.torch.models.bert:BertModel", "keras": "taa.keras.models.bert:BertModel",
                      "flax": "taa.flax.models.bert:BertModel"},
        "BertForMaskedLM": {"torch": "taa.torch.models.bert:BertForMaskedLM",
                            "keras": "taa.keras.models.bert:BertForMaskedLM",
                            "flax": "taa.flax.models.bert:BertForMaskedLM"},
        "BertForSequenceClassification": {"torch": "taa.torch.models.bert:BertForSequenceClassification",
                                          "keras": "taa.keras.models.bert:BertForSequenceClassification",
                                          "flax": "taa.flax.models.bert:BertForSequenceClassification"},
    },
    generates_text=False,
    embeds_sentences=True,
    truncates_input=True,
    hf_model_types=("bert",),
    hf_architectures={
        "BertModel": "BertModel",
        "BertForMaskedLM": "BertForMaskedLM",
        "BertForSequenceClassification": "BertForSequenceClassification",
    },
    hf_converter="taa.convert.hf_bert",
))
register_family(ModelFamily(
    name="t5",
    config=T5Config,
    description="A text-to-text encoder-decoder with relative position bias",
    paper="Raffel et al. 2020, Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer",
    default_architecture="T5ForConditionalGeneration",
    architectures={"T5ForConditionalGeneration": {"torch": "taa.torch.models.t5:T5ForConditionalGeneration",
                                                  "keras": "taa.keras.models.t5:T5ForConditionalGeneration",
                                                  "flax": "taa.flax.models.t5:T5ForConditionalGeneration"}},
    is_encoder_decoder=True,
    hf_model_types=("t5",),
    hf_architectures={"T5ForConditionalGeneration": "T5ForConditionalGeneration"},
    hf_converter="taa.convert.hf_t5",
))
register_family(ModelFamily(
    name="vit",
    config=ViTConfig,
    description="The Vision Transformer: a pre-norm encoder over image patches, with a class token",
    paper="Dosovitskiy et al. 2021, An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
    default_architecture="ViTModel",
    architectures={"ViTModel": {"torch": "taa.torch.models.vit:ViTModel"},
                   "ViTForImageClassification": {"torch": "taa.torch.models.vit:ViTForImageClassification"}},
    generates_text=False,
    hf_model_types=("vit",),
    hf_architectures={"ViTModel": "ViTModel", "ViTForImageClassification": "ViTForImageClassification"},
    hf_converter="taa.convert.hf_vit",
))
register_family(ModelFamily(
    name="decision_transformer",
    config=DecisionTransformerConfig,
    description="A causal GPT over (return-to-go, state, action) tokens that predicts actions",
    paper="Chen et al. 2021, Decision Transformer: Reinforcement Learning via Sequence Modeling",
    default_architecture="DecisionTransformer",
    architectures={"DecisionTransformer": {"torch": "taa.torch.models.decision_transformer:DecisionTransformer"}},
    generates_text=False,
    hf_model_types=("decision_transformer",),
    hf_architectures={"DecisionTransformerModel": "DecisionTransformer"},
    hf_converter="taa.convert.hf_decision_transformer",
))

for _spec in (
    TaskSpec("copy", CopyTaskConfig, "taa.tasks.copy", "transformer", "Transformer",
             "The Annotated Transformer's synthetic copy task: the target repeats the source"),
    TaskSpec("translation", TranslationTaskConfig, "taa.tasks.translation", "transformer", "Transformer",
             "Machine translation from parallel text (Multi30k by default), BLEU with beam search"),
    TaskSpec("language_model", LanguageModelTaskConfig, "taa.tasks.language_model", "gpt", "GPT",
             "Next-token prediction on running text (Tiny Shakespeare by default)"),
    TaskSpec("masked_lm", MaskedLMTaskConfig, "taa.tasks.masked_lm", "bert", "BertForMaskedLM",
             "BERT's masked language model, from scratch"),
    TaskSpec("classification", ClassificationTaskConfig, "taa.tasks.classification", "bert",
             "BertForSequenceClassification", "Sentence classification (GLUE SST-2 by default), fine-tuning BERT"),
    TaskSpec("image_classification", ImageClassificationTaskConfig, "taa.tasks.image_classification", "vit",
             "ViTForImageClassification", "Image classification with a Vision Transformer (8x8 digits by default)"),
    TaskSpec("offline_rl", OfflineRLTaskConfig, "taa.tasks.offline_rl", "decision_transformer",
             "DecisionTransformer", "Offline reinforcement learning: a Decision Transformer from trajectories "
             "(CartPole by default)"),
    TaskSpec("text_to_text", TextToTextTaskConfig, "taa.tasks.text_to_text", "t5", "T5ForConditionalGeneration",
             "T5's text-to-text framing: the task is named in the input"),
):
    register_task(_spec)
del _spec
