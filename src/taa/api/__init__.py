"""The Python API: one function per ``taa`` command, called as the command line calls it.

    from taa import api

    api.train("copy", overrides=["train.steps=300"], out="runs/copy", tracking="none")
    api.classify("runs/sst2", sentences=["a gripping, funny film"])

Each function takes the command's options as keyword arguments of the same names
(``--checkpoint DIR`` is ``checkpoint=DIR``, ``--max-new-tokens`` is ``max_new_tokens``,
``--set`` is ``overrides``) and returns what the command prints with ``--json``: dicts,
lists, strings and numbers. :mod:`taa.cli` is a thin layer over it that parses the
options, calls the function and prints what it returns.

Bad input (a missing file, a bad line, a folder of the wrong kind, options that exclude
each other) raises :class:`taa.config.ConfigError` (a bad folder: its subclass
:class:`taa.folders.CheckpointError`) or :class:`taa.data.DataError`, with a one-line
message naming the file, the line or the option. Whether a model can do what a command
asks (generate text, classify, embed) is decided by its family and task in
:mod:`taa.registry`. Frameworks are imported inside the functions: ``import taa.api``
imports none.
"""

from taa.api._common import PathLike, load, tasks_of
from taa.api.decoding import GENERATE_MAX_NEW_TOKENS, GENERATE_NEW_TOKENS, evaluate, generate, translate
from taa.api.encoders import classify, embed
from taa.api.model_tools import convert, model_info, models
from taa.api.training import _make_tracker, _train_result, builtin_recipe, default_recipe, resolve_recipe, train
from taa.api.trajectories import trajectories
from taa.api.viz import attention_weights, plot_attention
from taa.api.vertex import vertex_job

__all__ = [
    "attention_weights", "classify", "convert", "embed", "evaluate", "generate", "model_info", "models",
    "plot_attention", "train", "trajectories", "translate",
]
