"""Tasks: data, training and evaluation wired together, one module per task.

Every task module offers ``run(recipe, out=None, progress=True, resume=None, tracker=None)``
which trains with the one :class:`taa.torch.training.Trainer`, evaluates, writes the
checkpoint folder ``out`` and returns ``{"metrics": ..., ...}``. ``taa train`` finds the
module of a recipe's ``task`` here; a new task is one entry in :data:`TASK_MODULES`
(plus its data config in :data:`taa.config.TASKS`).

This package imports no framework: :func:`task_runner` imports the module on demand.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

TASK_MODULES: dict[str, str] = {
    "copy": "taa.tasks.copy",
    "translation": "taa.tasks.translation",
    "language_model": "taa.tasks.language_model",
    "masked_lm": "taa.tasks.masked_lm",
    "classification": "taa.tasks.classification",
    "text_to_text": "taa.tasks.text_to_text",
}


def task_runner(task: str) -> Callable[..., dict[str, Any]]:
    """The ``run`` function of ``task``'s module."""
    if task not in TASK_MODULES:
        known = ", ".join(sorted(TASK_MODULES))
        raise KeyError(f"task {task!r} has no module (known: {known})")
    return importlib.import_module(TASK_MODULES[task]).run


def require_model_config(recipe: Any, config_class: type, example_preset: str) -> None:
    """A task's model section must build the model the task trains; say which otherwise."""
    from taa.config import ConfigError

    if not isinstance(recipe.model, config_class):
        raise ConfigError(
            f"task={recipe.task!r} needs a {config_class.__name__} model (e.g. model.preset: {example_preset}), "
            f"got a {type(recipe.model).__name__}"
        )
