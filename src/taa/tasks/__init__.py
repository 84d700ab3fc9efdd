"""Tasks: data, training and evaluation wired together, one module per task.

Every task module offers ``run(recipe, out=None, progress=True, resume=None, tracker=None,
overwrite=False)``, which trains with the one :class:`taa.torch.training.Trainer`, evaluates, writes the
checkpoint folder ``out`` and returns ``{"metrics": ..., ...}``. ``taa train`` finds the
module of a recipe's ``task`` in :mod:`taa.registry`; a new task is one
:func:`taa.registry.register_task` entry (its data config, its module, its model).

This package imports no framework: :func:`task_runner` imports the module on demand.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taa import registry

if TYPE_CHECKING:
    from taa.tasks.runner import Task


def _task_modules() -> dict[str, str]:
    return {spec.name: spec.module for spec in registry.tasks()}


def __getattr__(name: str) -> Any:
    """``TASK_MODULES`` (task -> its module's import path), read from the registry when asked."""
    if name == "TASK_MODULES":
        return _task_modules()
    raise AttributeError(f"module 'taa.tasks' has no attribute {name!r}")


def task_runner(task: str) -> Callable[..., dict[str, Any]]:
    """The ``run`` function of ``task``'s module."""
    modules = _task_modules()
    if task not in modules:
        raise KeyError(f"task {task!r} has no module (known: {', '.join(sorted(modules))})")
    return importlib.import_module(modules[task]).run


def task_class(task: str) -> type[Task]:
    """The :class:`~taa.tasks.runner.Task` class of ``task``'s module (what its ``run`` trains)."""
    return task_runner(task).task_class

