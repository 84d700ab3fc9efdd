"""taa.registry: one place says what a model family and a task are.

The toy family at the bottom proves that a new family is one entry: registered in this
module alone, it shows in ``taa models``, ``taa model-info`` and ``from_pretrained``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from taa import config as cfg
from taa import registry
from taa.cli import main
from taa.config import ConfigError


def run(*args: str):
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, list(args))


# --------------------------------------------------------------------------------------
# What ships
# --------------------------------------------------------------------------------------


def test_the_shipped_families_and_tasks():
    assert [family.name for family in registry.families()] == ["transformer", "gpt", "bert", "t5", "vit",
                                                                  "decision_transformer"]
    assert [spec.name for spec in registry.tasks()] == [
        "copy", "translation", "language_model", "masked_lm", "classification", "image_classification",
        "offline_rl", "text_to_text"]
    assert registry.presets("vit") == ["vit-b16", "vit-digits", "vit-mnist", "vit-tiny"]
    assert registry.presets("decision_transformer") == ["dt-cartpole", "dt-pendulum", "dt-tiny"]
    assert [spec.name for spec in registry.tasks("bert")] == ["masked_lm", "classification"]
    assert registry.presets("gpt") == ["gpt2-small", "gpt-shakespeare-char", "gpt-tiny"]


def test_every_preset_belongs_to_a_family():
    owned = [name for family in registry.families() for name in registry.presets(family.name)]
    assert sorted(owned) == sorted(cfg.PRESETS)
    assert registry.family_of_preset("t5-small").name == "t5"


@pytest.mark.parametrize("family", registry.families(), ids=lambda family: family.name)
def test_every_implementation_and_converter_imports(family):
    for architecture in family.architectures:
        cls = registry.implementation(architecture)
        assert cls.__name__ == architecture and issubclass(cls, nn.Module)
    if family.hf_converter:
        import importlib

        converter = importlib.import_module(family.hf_converter)
        for name in ("config_from_hf", "config_to_hf", "read_hf_folder", "to_hf"):
            assert callable(getattr(converter, name)), (family.hf_converter, name)


def test_every_task_names_a_module_that_runs_it():
    import importlib

    for spec in registry.tasks():
        assert callable(importlib.import_module(spec.module).run), spec.module
        assert spec.architecture in registry.family(spec.family).architectures


def test_lookups():
    assert registry.family_of_config(cfg.preset("bert-tiny")).name == "bert"
    assert registry.family_of_architecture("BertForMaskedLM").name == "bert"
    assert registry.family_of_hf_model_type("gpt2").name == "gpt"
    assert registry.task("text_to_text").data_config is cfg.TextToTextTaskConfig
    assert registry.family("t5").is_encoder_decoder and not registry.family("gpt").is_encoder_decoder
    assert not registry.family("bert").generates_text and registry.family("gpt").generates_text
    assert registry.family("bert").frameworks == ("flax", "keras", "torch")


@pytest.mark.parametrize("lookup, message", [
    (lambda: registry.family("rnn"), "unknown model family 'rnn' (known: transformer, gpt, bert, t5, vit, decision_transformer)"),
    (lambda: registry.task("dance"), "unknown task 'dance' (known: copy, translation, language_model, "),
    (lambda: registry.family_of_config(object()), "object is not a model config (known: TransformerConfig, "),
    (lambda: registry.family_of_architecture("LSTM"), "architecture='LSTM' is not one of Transformer, GPT, "),
    (lambda: registry.family_of_hf_model_type("llama"),
     "model_type='llama' is not supported (taa converts gpt2, bert, t5, vit, decision_transformer)"),
    (lambda: registry.family_of_preset("gpt5"), "unknown preset 'gpt5' (known: bert-base, "),
    (lambda: registry.implementation("GPT", "jax"), "GPT has no jax implementation (implemented in: torch, keras, flax)"),
])
def test_lookup_errors_are_one_line_naming_the_known_ones(lookup, message):
    with pytest.raises(ConfigError) as error:
        lookup()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_family_that_contradicts_itself_or_another_is_refused():
    with pytest.raises(ConfigError, match="default_architecture='Toy' is not in its architectures"):
        registry.ModelFamily("toy", ToyConfig, "", "", "Toy", {"ToyModel": {"torch": "m:ToyModel"}})
    with pytest.raises(ConfigError, match="not 'module.path:ClassName'"):
        registry.ModelFamily("toy", ToyConfig, "", "", "ToyModel", {"ToyModel": {"torch": "m.ToyModel"}})
    with pytest.raises(ConfigError, match="hf_model_types and hf_converter go together"):
        registry.ModelFamily("toy", ToyConfig, "", "", "ToyModel", {"ToyModel": {"torch": "m:ToyModel"}},
                             hf_model_types=("toy",))
    with pytest.raises(ConfigError, match="model family 'gpt' is already registered"):
        registry.register_family(registry.family("gpt"))
    with pytest.raises(ConfigError, match="architecture 'GPT' already belongs to model family 'gpt'"):
        registry.register_family(registry.ModelFamily("toy", ToyConfig, "", "", "GPT", {"GPT": {"torch": "m:GPT"}}))
    with pytest.raises(ConfigError, match="preset 'gpt-tiny' already exists"):
        registry.register_family(toy_family_entry(), presets={"gpt-tiny": {}})
    assert "toy" not in cfg.MODEL_TYPES
    with pytest.raises(ConfigError, match="model family 'gpt' is trained by task 'language_model'"):
        registry.unregister_family("gpt")


def test_taa_models_prints_the_registry():
    table = run("models")
    assert table.exit_code == 0, table.output
    for column in ("family", "presets", "tasks", "frameworks", "HF architectures"):
        assert column in table.output
    shown = ("transformer", "vaswani-base", "language_model", "torch", "GPT2LMHeadModel", "T5ForConditionalGeneration")
    for text in shown:
        assert text in table.output
    rows = json.loads(run("models", "--json").output)
    assert rows == registry.summary()
    gpt = next(row for row in rows if row["family"] == "gpt")
    assert gpt["presets"] == ["gpt2-small", "gpt-shakespeare-char", "gpt-tiny"]
    assert gpt["tasks"] == ["language_model"] and gpt["frameworks"] == ["flax", "keras", "torch"]
    assert gpt["hf_architectures"] == ["GPT2LMHeadModel"]


# --------------------------------------------------------------------------------------
# Adding a family is one entry
# --------------------------------------------------------------------------------------


@dataclass
class ToyConfig(cfg.BlockConfig):
    """A bag-of-embeddings classifier: enough to be a family, nothing more."""

    d_model: int = 8
    n_heads: int = 2
    d_ff: int = 16
    vocab_size: int = 12
    num_labels: int = 3


class ToyModel(nn.Module):
    """Token embeddings, their mean, a linear layer: logits (B, num_labels) of ids (B, T)."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.head = nn.Linear(config.d_model, config.num_labels)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(ids).mean(dim=1))  # (B, T, d_model) -> (B, d_model) -> (B, labels)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameter_breakdown(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in part.parameters()) for name, part in self.named_children()}


def toy_family_entry() -> registry.ModelFamily:
    return registry.ModelFamily(
        name="toy",
        config=ToyConfig,
        description="A bag-of-embeddings classifier",
        paper="none",
        default_architecture="ToyModel",
        architectures={"ToyModel": {"torch": f"{__name__}:ToyModel"}},
        generates_text=False,
    )


@pytest.fixture
def toy_family():
    family = registry.register_family(toy_family_entry(), presets={"toy-tiny": {"d_model": 4, "vocab_size": 10}})
    yield family
    registry.unregister_family("toy")
    assert "toy-tiny" not in cfg.PRESETS and "toy" not in cfg.MODEL_TYPES


def test_a_registered_family_shows_in_taa_models(toy_family):
    rows = json.loads(run("models", "--json").output)
    toy = next(row for row in rows if row["family"] == "toy")
    assert toy["presets"] == ["toy-tiny"] and toy["tasks"] == [] and toy["frameworks"] == ["torch"]
    assert toy["config"] == "ToyConfig"
    assert "toy-tiny" in run("models").output
    assert cfg.MODEL_TYPES["toy"] is ToyConfig


def test_a_registered_family_shows_in_model_info(toy_family):
    info = json.loads(run("model-info", "toy-tiny", "--json").output)
    # embedding 10 x 4, head 4 x 3 + 3
    assert info["components"] == {"embedding": 40, "head": 15} and info["parameters"] == 55
    assert info["config"]["d_model"] == 4
    assert "55" in run("model-info", "toy-tiny", "--set", "n_heads=1").output


def test_a_registered_family_loads_with_from_pretrained(toy_family, tmp_path):
    from taa.torch import from_pretrained
    from taa.torch.hub import save_pretrained

    torch.manual_seed(0)
    model = ToyModel(cfg.preset("toy-tiny", num_labels=2)).eval()
    save_pretrained(model, tmp_path / "toy")
    assert "type: toy" in (tmp_path / "toy" / "model.yaml").read_text()
    loaded = from_pretrained(tmp_path / "toy")
    assert isinstance(loaded.model, ToyModel) and loaded.architecture == "ToyModel" and not loaded.is_encoder_decoder
    assert loaded.config == model.config and loaded.tokenizer is None
    ids = torch.tensor([[1, 2, 3], [4, 5, 9]])
    torch.testing.assert_close(loaded.model(ids), model(ids), atol=0, rtol=0)


def test_a_toy_model_section_reads_back(toy_family):
    import yaml

    recipe = cfg.RecipeConfig.from_dict({"model": {"type": "toy", "num_labels": 5}})
    assert isinstance(recipe.model, ToyConfig) and recipe.model.num_labels == 5
    assert cfg.RecipeConfig.from_dict(yaml.safe_load(cfg.dumps(recipe))) == recipe
