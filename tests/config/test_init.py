"""taa.config: one package that re-exports every concern, and the registry's views."""

import inspect

from taa import config as cfg
from taa import registry


def _defined_in(module) -> list[str]:
    """The public names a module defines itself (its classes, functions and tables, not its imports)."""
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if getattr(value, "__module__", module.__name__) == module.__name__:  # a table has no __module__
            names.append(name)
    return names


def test_every_name_of_the_package_is_reachable_from_it():
    from taa.config import coerce, models, presets, recipe, tasks, training

    for module in (coerce, models, presets, recipe, tasks, training):
        for name in _defined_in(module):
            assert getattr(cfg, name) is getattr(module, name), f"taa.config.{name}"
    assert set(cfg.__all__) <= set(dir(cfg))


def test_model_types_and_tasks_are_views_of_the_registry():
    assert cfg.MODEL_TYPES == {family.name: family.config for family in registry.families()}
    assert cfg.MODEL_TYPES["t5"] is cfg.T5Config
    assert cfg.TASKS == {spec.name: spec.data_config for spec in registry.tasks()}
    assert cfg.TASKS["translation"] is cfg.TranslationTaskConfig
