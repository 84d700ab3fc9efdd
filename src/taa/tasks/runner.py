"""The one run every task shares: data, model, training, evaluation and the run folder.

A task module says only what is particular to it, as a :class:`Task`: how to read its
data, make (or load) its tokenizer, complete the model config (the vocabulary size the
tokenizer fixed), encode the data, make batches, compute the loss of a batch, validate,
evaluate the final model (a test set, a text sample), and which files it adds to the run
folder. :func:`run_task` does the rest, in this order:

1. check the recipe: the model section builds the class the task trains (the registry's
   :class:`~taa.registry.TaskSpec`), ``train.select_metric`` is one its validation
   reports, plus the task's own checks;
2. seed every random generator with ``train.seed``;
3. read the data, train the tokenizer (or reload it from the state folder when resuming),
   complete the model config, encode the data;
4. build the model (the registry's class for the task in the task's framework, unless the
   task loads pre-trained weights) and train it with that framework's Trainer
   (:class:`~taa.torch.training.Trainer` for torch), resuming from a state folder when
   asked; validation runs every ``eval_every`` steps; each state folder keeps the tokenizer
   and the recipe as given, which :func:`check_resume` compares a resumed run's with;
5. evaluate the final weights and gather the metrics: the task's own, the validation
   metrics of the final weights, and :data:`CORE_METRICS`, named the same for every task;
6. write the run folder (:mod:`taa.folders`: weights, recipe, metrics, tokenizer, training
   curves, the task's files) and hand its files to the tracker.

The progress bar shows each step that is not training as a phase: data preparation,
tokenizer training, encoding, validation and the final evaluation.

This module imports no framework: the framework's training package (:func:`training_backend`)
is imported when a run starts, so a Keras or Flax port reuses the skeleton as it is. The run's
framework is the recipe's ``train.framework``; a task names those it trains with
(:attr:`Task.frameworks`), and a framework other than torch may refuse what its trainer does
not do (its ``check_train``), both before any data is read (:func:`check_framework`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from taa import config as cfg
from taa import folders, registry
from taa.config.diff import RESULT_NEUTRAL, describe_differences, recipe_differences
from taa.tracking import Tracker, flatten_params
from taa.training.batches import BatchStream
from taa.training.launch import process_count
from taa.training.progress import TrainingProgress

if TYPE_CHECKING:  # the hints name torch's types; a run imports its framework only when it starts
    from torch import Tensor, nn

    from taa.torch.training import Trainer, TrainResult

# The framework a run trains with unless its recipe says otherwise (train.framework).
DEFAULT_FRAMEWORK = "torch"

# The metrics every run reports, whatever its task.
CORE_METRICS = (
    "steps",  # optimizer steps taken
    "train_seconds",  # time spent training (validation included, data preparation not)
    "tokens_per_second",  # training speed
    "final_train_loss",  # the mean training loss of the last logging interval
    "best_steps",  # the steps of the best weights kept in the run folder, best first
    "stop_reason",  # "steps", "time_budget" or "early_stopping" (taa.torch.training.loop.STOP_REASONS)
    "skipped_steps",  # the steps whose loss or gradient was not finite, not applied (train.nonfinite: skip)
    "parameters",  # the model's number of weights
)
# A framework that compiles its training step (flax) also reports "train_compiles": how
# many times it compiled it (once per shape of a step's batches), "train_compile_seconds"
# (the wall time of the steps that compiled) and "first_step_seconds" (the first step's,
# its compilation included).


class Task:
    """What one task does in a run; the hooks are called in the order of the module docstring.

    The hooks keep what they make (data, tokenizer, encoded sets) on ``self``; ``recipe``
    is the run's recipe, whose model section :meth:`model_config` has completed once the
    tokenizer is known.
    """

    example_preset: ClassVar[str] = ""  # a preset of the right family, named when the model section is wrong
    trains_tokenizer: ClassVar[bool] = False  # new_tokenizer is worth a "tokenizer training" phase
    final_phase: ClassVar[str] = ""  # what the progress bar calls final_metrics ("test decoding"); "" = none
    rate_unit: ClassVar[str] = "tok"  # what compute_loss counts, for the progress bar: "tok" or "sent"
    files: ClassVar[tuple[str, ...]] = ()  # what write_files adds to the run folder
    frameworks: ClassVar[tuple[str, ...]] = (DEFAULT_FRAMEWORK,)  # the train.framework values it trains with

    def __init__(self, recipe: cfg.RecipeConfig) -> None:
        self.recipe = recipe
        self.tokenizer: Any = None

    @property
    def framework(self) -> str:
        """Whose model class, Trainer and checkpoints the run uses: the recipe's ``train.framework``."""
        return self.recipe.train.framework

    # ---------------------------------------------------------------- before training

    def check(self) -> None:
        """Refuse a recipe the task cannot train, before any data is read (one-line ConfigError)."""

    def read_data(self) -> None:
        """Read the data set (text, sentence pairs, labelled rows)."""

    def new_tokenizer(self) -> Any:
        """The tokenizer of a new run (trained on the data, or a pre-trained one); None if the task has none."""
        return None

    def load_tokenizer(self, folder: Path) -> Any:
        """The tokenizer saved in ``folder`` (a state folder's ``tokenizer/``) by :meth:`save_tokenizer`."""
        return None

    def save_tokenizer(self, folder: Path) -> None:
        """Write the tokenizer into ``folder`` (``tokenizer/`` of a state or run folder)."""

    def model_config(self) -> Any:
        """The model section completed with what the tokenizer fixed (vocabulary size, special ids)."""
        return self.recipe.model

    def encode(self) -> None:
        """Encode the data; prepare the validation and test sets."""

    def new_model(self, resuming: bool) -> Optional[nn.Module]:
        """A model the task builds itself (pre-trained weights); None: the registry's class for the task."""
        return None

    # ---------------------------------------------------------------- training

    def batches(self) -> BatchStream:
        """The endless, resumable stream of training batches."""
        raise NotImplementedError

    def loss(self) -> Callable[[nn.Module, Any], tuple[Tensor, Tensor]]:
        """``compute_loss(model, batch)`` -> (summed loss, number of targets), with the recipe's smoothing."""
        raise NotImplementedError

    # ``evaluate(model) -> {"val_loss": ..., ...}``: the validation metrics, or None for a
    # task without a validation set. A method in the tasks that have one.
    evaluate: Optional[Callable[[nn.Module], dict[str, float]]] = None

    def validation_metrics(self) -> dict[str, str]:
        """The metrics :attr:`evaluate` reports with this recipe, each with the way it is
        better (``"min"`` or ``"max"``): what ``train.select_metric`` and ``train.select_mode``
        may name (:func:`check_select_metric`). Empty for a task without validation."""
        return {}

    # ---------------------------------------------------------------- after training

    def final_metrics(self, model: nn.Module, result: TrainResult) -> dict[str, Any]:
        """The task's own figures of the final model (test scores, a sample, the data's size)."""
        return {}

    def tokens_per_second(self, result: TrainResult) -> float:
        """The training speed in tokens: what the loss counts, unless the task knows better."""
        return result.tokens_per_second

    def write_files(self, folder: Path) -> None:
        """Write :attr:`files` into the run folder."""

    def outcome(self) -> dict[str, Any]:
        """What ``run`` returns besides the model, the metrics and the result (tokenizer, hypotheses)."""
        return {"tokenizer": self.tokenizer} if self.tokenizer is not None else {}


# ------------------------------------------------------------------ the run


def run_task(
    task: Task,
    out: Optional[str | Path] = None,
    progress: bool = True,
    resume: Optional[str | Path] = None,
    tracker: Optional[Tracker] = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train ``task``, evaluate it, write the run folder ``out``; see the module docstring.

    Before the data is read, the recipe is checked (:func:`check_recipe`) and every entry
    of ``out`` the run writes must be of the kind it writes and writable
    (:func:`taa.folders.check_run_entries`), so that nothing fails at the end, after the
    work. ``overwrite``: the earlier run in ``out`` (its files and its task's,
    :func:`earlier_task_files`) is set aside once the data, the tokenizer and the model are
    ready, just before training, and deleted once the new run has a state in ``out``; a run
    that fails before that puts it back (:class:`taa.folders.ReplacedRun`). A run resumed
    from another folder than ``out`` brings along what its state needs there
    (:func:`carry_over`).

    Returns ``{"model", "metrics", "result", ...}`` plus the task's :meth:`Task.outcome`.
    """
    recipe, train = task.recipe, task.recipe.train
    given = recipe  # as given: what a resume compares its own recipe with (check_resume)
    check_recipe(task, resume=resume is not None, processes=process_count())
    backend = training_backend(task.framework)
    tracker = tracker or Tracker()
    bar = TrainingProgress(train.steps, enabled=progress, unit=task.rate_unit)
    parallel = backend.setup_parallel(train)  # the device; under torchrun, this process's place
    try:
        return _run(task, given, backend, tracker, bar, parallel, out, resume, overwrite)
    finally:
        parallel.close()


def _run(task: Task, given: cfg.RecipeConfig, backend: ModuleType, tracker: Tracker, bar: TrainingProgress,
         parallel: Any, out: Optional[str | Path], resume: Optional[str | Path], overwrite: bool) -> dict[str, Any]:
    """:func:`run_task` once the process knows its device and its place among the
    processes (``parallel``): every process reads the data and trains; rank 0 alone trains
    the tokenizer (the others receive it), writes the run folder and evaluates the final
    model."""
    recipe, train, main = task.recipe, task.recipe.train, parallel.is_main
    if out is not None and main:
        folders.check_run_entries(out, task.files)
    backend.seed_everything(train.seed)
    state = folders.find_state_folder(resume) if resume is not None else None

    with bar.phase("data preparation"), parallel.main_first():  # a download happens once
        task.read_data()
    if state is not None:
        task.tokenizer = task.load_tokenizer(state / folders.TOKENIZER)
    else:
        with bar.phase("tokenizer training") if task.trains_tokenizer else nullcontext():
            tokenizer = task.new_tokenizer() if main else None
        task.tokenizer = parallel.broadcast(tokenizer)  # one tokenizer for every process
    recipe = task.recipe = dataclasses.replace(recipe, model=task.model_config())
    with bar.phase("encoding"):
        task.encode()
    model = task.new_model(resuming=state is not None) or new_model(recipe, task.framework)
    tracker.log_params(flatten_params(recipe))

    def save_tokenizer(folder: Path) -> None:
        task.save_tokenizer(folder / folders.TOKENIZER)

    replacing: Optional[folders.ReplacedRun] = None  # the run --overwrite replaces, while set aside

    def save_state_files(folder: Path) -> None:  # beside each state: what resuming it needs
        write_given_recipe(folder, given)
        if task.tokenizer is not None:
            save_tokenizer(folder)
        if replacing is not None:  # a state of the new run may already be in place: the earlier run goes
            replacing.replaced()

    def validate(model: nn.Module) -> dict[str, float]:
        with bar.phase("validation"):
            return task.evaluate(model)

    trainer = backend.Trainer(
        model, train, task.loss(), task.batches(), d_model=recipe.model.d_model,
        evaluate=validate if task.evaluate is not None else None, out=out, tracker=tracker, progress=bar,
        write_extra=save_state_files, rate_unit=task.rate_unit, parallel=parallel,
    )
    if state is not None:
        load_state(trainer, state)
    if out is not None and overwrite and main:
        replacing = folders.ReplacedRun(out, [*task.files, *earlier_task_files(Path(out))])
    with replacing or nullcontext():
        if state is not None and out is not None and main:
            carry_over(state, Path(out), [step for _, step in trainer.state.best])
            record_resume_changes(Path(out), state, given)
        result = trainer.fit()
        model = trainer.model  # the whole model with the final weights (gathered from shards under fsdp)
        if not main:  # the others' part ends with the training
            return {"model": model, "metrics": {}, "result": result}

        with bar.phase(task.final_phase) if task.final_phase else nullcontext():
            own = task.final_metrics(model, result)
        metrics = {**own, **selected_metrics(trainer, result), **core_metrics(task, trainer, result, backend)}
        tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)}, result.steps)
        if out is not None:
            write_run_folder(Path(out), task, model, metrics, result, tracker,
                             save_tokenizer if task.tokenizer is not None else None, backend)
    return {"model": model, "metrics": metrics, "result": result, **task.outcome()}


def run_function(task_class: type[Task]) -> Callable[..., dict[str, Any]]:
    """A task module's ``run(recipe, out=None, progress=True, resume=None, tracker=None,
    overwrite=False)``: :func:`run_task` on a ``task_class`` made from the recipe."""

    def run(
        recipe: cfg.RecipeConfig,
        out: Optional[str | Path] = None,
        progress: bool = True,
        resume: Optional[str | Path] = None,
        tracker: Optional[Tracker] = None,
        overwrite: bool = False,
    ) -> dict[str, Any]:
        return run_task(task_class(recipe), out=out, progress=progress, resume=resume, tracker=tracker,
                        overwrite=overwrite)

    run.__doc__ = f"Train, evaluate and save a run of {task_class.__name__}: {inspect.getdoc(task_class)}"
    run.__module__ = task_class.__module__
    run.task_class = task_class  # type: ignore[attr-defined]  # (taa.tasks.task_class)
    return run


def earlier_task_files(folder: Path) -> tuple[str, ...]:
    """The files the task of the run in ``folder`` wrote there (:attr:`Task.files`), which
    ``--overwrite`` replaces with the new run's: a translation run's hypotheses must not
    stay beside a copy run that replaces it. The task is its ``recipe.yaml``'s, else its
    state's recipe's; when neither can be read (damaged, or a task this taa does not know),
    the files of every task, since the run's own are among them. None when ``folder``
    holds no run."""
    from taa.tasks import task_class

    if folders.held_model(folder) != "a training run":
        return ()
    for path in (folder / folders.RECIPE, folder / folders.STATE / folders.GIVEN_RECIPE):
        try:
            return task_class(str(cfg.read_mapping(path).get("task", cfg.RecipeConfig.task))).files
        except (cfg.ConfigError, KeyError, OSError):  # missing, damaged, unknown
            continue
    return tuple(dict.fromkeys(name for spec in registry.tasks() for name in task_class(spec.name).files))


# ------------------------------------------------------------------ the framework


def training_backend(framework: str = DEFAULT_FRAMEWORK) -> ModuleType:
    """The training package of ``framework`` (``taa.torch.training`` for torch,
    ``taa.keras.training`` for keras, ``taa.flax.training`` for flax), imported now.

    It provides what the run needs of a framework: ``setup_parallel(train)`` (the device
    and this process's place among several: ``is_main``, ``main_first()``, ``broadcast``,
    ``close()``), ``Trainer`` (its ``fit`` returning a ``TrainResult``),
    ``seed_everything(seed)``, ``save_checkpoint(out, model, recipe, metrics,
    write_extra=...)`` and ``count_parameters(model)``; a framework other than torch also
    ``check_train(train, resume, processes)`` (:func:`check_framework`); Flax, whose models
    draw their weights from the random streams they are built with (JAX has no global
    generator), ``build_model(model_class, config, seed)`` (:func:`new_model`).
    """
    return importlib.import_module(f"taa.{framework}.training")


# ------------------------------------------------------------------ the model


def check_recipe(task: Task, resume: bool = False, processes: int = 1) -> None:
    """Everything about the recipe that can be refused before any data is read: the model
    section (:func:`check_model_config`), the framework (:func:`check_framework`; ``resume``:
    the run continues a saved state, ``processes``: it trains on that many), the task's own
    checks (:meth:`Task.check`) and ``train.select_metric`` (:func:`check_select_metric`).
    ``taa train`` calls it before it starts the tracker, too, so that a bad setting leaves no
    failed tracked run."""
    check_model_config(task.recipe, task.example_preset)
    check_framework(task, resume, processes)
    task.check()
    check_select_metric(task)


def check_framework(task: Task, resume: bool = False, processes: int = 1) -> None:
    """The task trains with the recipe's ``train.framework`` (:attr:`Task.frameworks`), and
    a framework other than torch is installed and its trainer does what the run asks (its
    training package's ``check_train(train, resume, processes)``: one line for what it does
    not do). The torch trainer does everything; its package is not imported here."""
    framework, name = task.framework, task.recipe.task
    if framework not in task.frameworks:
        raise cfg.ConfigError(f"train.framework={framework!r}: task={name!r} trains with "
                              f"{' or '.join(task.frameworks)} only")
    if framework == DEFAULT_FRAMEWORK:
        return
    try:
        backend = training_backend(framework)
    except ImportError as error:
        raise cfg.ConfigError(f"train.framework={framework!r} needs {framework} installed ({error}): "
                              f"pip install 'taa[{framework}]'") from None
    backend.check_train(task.recipe.train, resume=resume, processes=processes)


def check_model_config(recipe: cfg.RecipeConfig, example_preset: str) -> None:
    """The model section must be of the family the task trains (the registry's TaskSpec)."""
    family = registry.family(registry.task(recipe.task).family)
    if not isinstance(recipe.model, family.config):
        example = f" (e.g. model.preset: {example_preset})" if example_preset else ""
        raise cfg.ConfigError(
            f"task={recipe.task!r} needs a {family.config.__name__} model{example}, got a {type(recipe.model).__name__}"
        )


def new_model(recipe: cfg.RecipeConfig, framework: str = DEFAULT_FRAMEWORK) -> nn.Module:
    """A new model of the class the registry names for the recipe's task in ``framework``,
    initialised from the seeded generator (a Flax model: from random streams seeded with
    ``train.seed``)."""
    model_class = registry.implementation(registry.task(recipe.task).architecture, framework)
    if framework == "flax":
        return training_backend(framework).build_model(model_class, recipe.model, recipe.train.seed)
    return model_class(recipe.model)


# ------------------------------------------------------------------ the metrics


def check_select_metric(task: Task) -> None:
    """``train.select_metric`` must be a metric the task's validation reports, and
    ``train.select_mode`` the way it is better (one line, before any data is read: else the
    run would train up to its first validation and fail there, or keep its worst weights).
    A task without validation ranks nothing: it takes no other metric than the default."""
    train, name = task.recipe.train, task.recipe.task
    metrics = task.validation_metrics() if task.evaluate is not None else {}
    if not metrics:
        if train.select_metric != cfg.DEFAULT_SELECT_METRIC:
            raise cfg.ConfigError(f"train.select_metric={train.select_metric!r}: task={name!r} has no validation "
                                  "to select weights by (leave train.select_metric out)")
        return
    if train.select_metric not in metrics:
        raise cfg.ConfigError(f"train.select_metric={train.select_metric!r} is not a validation metric of "
                              f"task={name!r}: one of {', '.join(metrics)}")
    better = metrics[train.select_metric]
    if train.select_mode != better:
        raise cfg.ConfigError(f"train.select_mode={train.select_mode!r}: a {'lower' if better == 'min' else 'higher'} "
                              f"{train.select_metric} is better (set train.select_mode={better})")


def core_metrics(task: Task, trainer: Trainer, result: TrainResult, backend: ModuleType) -> dict[str, Any]:
    """:data:`CORE_METRICS` of a finished run."""
    return {
        "steps": result.steps,
        "train_seconds": result.seconds,
        "tokens_per_second": task.tokens_per_second(result),
        "final_train_loss": result.final_loss,
        "best_steps": [step for _, step in trainer.state.best] if trainer.out is not None else [],
        "stop_reason": result.stop_reason,
        "skipped_steps": result.skipped_steps,
        "parameters": backend.count_parameters(trainer.model),
        **({"train_compiles": result.compiles} if result.compiles is not None else {}),
        **({"train_compile_seconds": result.compile_seconds} if result.compile_seconds is not None else {}),
        **({"first_step_seconds": result.first_compile_seconds}
           if result.first_compile_seconds is not None else {}),
    }


def selected_metrics(trainer: Trainer, result: TrainResult) -> dict[str, float]:
    """The validation metrics of the weights the model holds after ``fit``.

    With a run folder the trainer reloads the best weights by ``select_metric``: their
    evaluation. Without one the model keeps its last weights: the last evaluation. An
    average of several kept checkpoints (``average_best``) was never evaluated during the
    run, so it is evaluated here.
    """
    if not result.evaluations:
        return {}
    kept = trainer.state.best if trainer.out is not None else []  # without a folder, no weights were kept
    if trainer.train.average_best and len(kept) > 1 and trainer.evaluate is not None:
        return dict(trainer.evaluate(trainer.model))
    evaluations = {e["step"]: e for e in result.evaluations}
    step = kept[0][1] if kept else result.evaluations[-1]["step"]
    return {k: v for k, v in evaluations[step].items() if k != "step"}


# ------------------------------------------------------------------ the run folder


def write_run_folder(
    out: Path,
    task: Task,
    model: nn.Module,
    metrics: dict[str, Any],
    result: TrainResult,
    tracker: Tracker,
    save_tokenizer: Optional[Callable[[Path], None]],
    backend: ModuleType,
) -> None:
    """The final checkpoint, the task's files and the training curves; the tracker keeps them all."""
    backend.save_checkpoint(out, model, task.recipe, metrics, write_extra=save_tokenizer)
    task.write_files(out)
    try:
        from taa.plots import plot_training_curves
    except ImportError:  # matplotlib missing: no picture, the run still counts
        pass
    else:
        plot_training_curves(result.history, result.evaluations, out / folders.CURVES)
    for name in (folders.RECIPE, folders.METRICS, folders.CURVES, folders.WEIGHTS, folders.TOKENIZER,
                 folders.RESUME_CHANGES, *task.files):
        if (out / name).exists():
            tracker.log_artifact(out / name)


# ------------------------------------------------------------------ resuming

# The model fields a task fills from its tokenizer (Task.model_config). A state written
# before states kept their recipe as given has only its run folder's completed recipe to
# compare with: these fields are left out of that comparison.
TOKENIZER_FIELDS = ("vocab_size", "source_vocab_size", "target_vocab_size", "pad_id", "bos_id", "eos_id",
                    "decoder_start_id")

# The fields whose values travel inside the optimizer's saved state: resuming loads them
# with its moments (the saved values win), so a change could not take effect. The learning
# rate is not among them: the trainer sets it at every step.
OPTIMIZER_FIELDS = ("train.optimizer", "train.adam_beta1", "train.adam_beta2", "train.adam_eps",
                    "train.weight_decay", "train.muon_momentum", "train.layer_lr_decay")

# A longer message about a state that does not fit is cut here (a model of another width
# would list every weight).
LONGEST_MESSAGE = 400


def write_given_recipe(folder: Path, recipe: cfg.RecipeConfig) -> None:
    """Write the recipe as given (its model section not yet completed by the task) into a
    state folder: a resume compares its own recipe, also as given, with it."""
    (folder / folders.GIVEN_RECIPE).write_text(cfg.dumps(recipe, "yaml"), encoding="utf-8")


def saved_recipe(state: Path) -> tuple[Optional[dict[str, Any]], Optional[Path]]:
    """The recipe a state folder was trained with, as a mapping, and the file it came from:
    the state's own copy (as given), else, for a state from before states kept one, its run
    folder's ``recipe.yaml`` (completed by the task); ``(None, None)`` when neither exists."""
    state = Path(state)
    for path in (state / folders.GIVEN_RECIPE, state.parent / folders.RECIPE):
        if path.is_file():
            try:
                return cfg.read_mapping(path), path
            except cfg.ConfigError as error:
                raise folders.CheckpointError(str(error)) from None
    return None, None


def resume_differences(recipe: cfg.RecipeConfig, state: Path) -> tuple[list[tuple[str, Any, Any]], Optional[dict]]:
    """How ``recipe`` trains differently from the run saved in ``state``: the differing
    fields as ``(name, saved value, value now)``, and the saved recipe (None when the state
    has none to compare with).

    Every field counts (:func:`~taa.config.diff.recipe_differences`) but those that change
    neither the weights nor the final evaluation (:data:`~taa.config.diff.RESULT_NEUTRAL`:
    the name, ``train.threads``, ``train.log_every``, ``train.checkpoint_every``); more steps
    count too, since the schedule, the validations and the final weights follow them. Both
    recipes are compared as given: the state keeps its recipe from before the task filled
    the model's vocabulary from the tokenizer, so like is compared with like. A state
    without its own copy (an older taa) is compared with its run folder's completed
    ``recipe.yaml``, leaving out :data:`TOKENIZER_FIELDS`.
    """
    saved, source = saved_recipe(state)
    if saved is None or source is None:
        return [], None
    try:
        before = cfg.RecipeConfig.from_dict(saved)
    except cfg.ConfigError as error:
        raise folders.CheckpointError(f"{source}: {error}") from None
    completed = source.name == folders.RECIPE
    ignore = RESULT_NEUTRAL + (tuple(f"model.{name}" for name in TOKENIZER_FIELDS) if completed else ())
    return recipe_differences(before, recipe, ignore), saved


def check_resume(recipe: cfg.RecipeConfig, state: Path, accept_changes: bool = False) -> None:
    """Refuse, in one line, to resume ``state`` with a recipe that trains differently from
    the saved run's (:func:`resume_differences`), unless ``accept_changes``
    (``--resume-changed``): then the run records the changes in ``out/resume_changes.json``
    once the state has loaded, with one warning (:func:`record_resume_changes`).
    Even accepted, a changed task or optimizer setting (:data:`OPTIMIZER_FIELDS`) is
    refused: the saved state cannot carry over to it. A state with no recipe to compare
    with (an older taa) resumes after one warning.
    """
    changes, saved = resume_differences(recipe, state)
    if saved is None:
        warnings.warn(f"{state}: no saved recipe to compare with (a state from an older taa): "
                      "resuming without checking the recipe", stacklevel=2)
        return
    if not changes:
        return
    described = describe_differences(changes)
    if not accept_changes:
        raise cfg.ConfigError(f"{state}: the recipe differs from the saved run's: {described} "
                              "(resume with --resume-changed to accept)")
    if saved.get("task", "copy") != recipe.task:
        raise cfg.ConfigError(f"{state}: the saved run trains task={saved.get('task', 'copy')!r}, this recipe "
                              f"task={recipe.task!r}: a resumed run keeps its task (train a new run into another folder)")
    optimizer = [change for change in changes if change[0] in OPTIMIZER_FIELDS]
    if optimizer:
        raise cfg.ConfigError(f"{state}: {describe_differences(optimizer)}: the saved optimizer state cannot carry "
                              "over to changed optimizer settings (train a new run into another folder)")


def carry_over(state: Path, out: Path, best_steps: list[int]) -> None:
    """Resuming the run whose state is ``state`` into another folder ``out`` (``taa train
    --resume A --out B``): ``out`` gets what the run's bookkeeping expects in its own folder,
    linked or copied, before training: the best weights the state lists (the run ends with
    them), then the state itself (``out`` can be resumed at once, even when no step is left
    to train), then the record of earlier changed resumes (``resume_changes.json``). In this
    order a kill leaves no state that lists a missing file. ``state``'s run folder is only
    read. Nothing to do when ``out`` is the run resumed."""
    source = state.parent
    if source.resolve() == out.resolve():
        return
    for step in best_steps:
        folders.copy_file(folders.best_weights(source, step), folders.best_weights(out, step))
    folders.copy_folder(state, out / folders.STATE)
    if (source / folders.RESUME_CHANGES).is_file():
        folders.copy_file(source / folders.RESUME_CHANGES, out / folders.RESUME_CHANGES)


def record_resume_changes(out: Path, state: Path, recipe: cfg.RecipeConfig) -> None:
    """If ``recipe`` differs from the one ``state`` was saved with, add an entry to the run
    folder's ``resume_changes.json`` (a list, an entry for each resume that changed the
    recipe): the step resumed at, each changed field with its saved value and its value
    now, and the whole saved recipe, which stays recoverable once the run's ``recipe.yaml``
    and states carry the new one; one warning says so. Called once the state has loaded,
    before training."""
    changes, saved = resume_differences(recipe, state)
    if not changes:
        return
    path = Path(out) / folders.RESUME_CHANGES
    entries = folders.read_json(path) if path.is_file() else []
    if not isinstance(entries, list):
        raise folders.CheckpointError(f"{path}: expected a list of resumes")
    entries.append({
        "step": _saved_step(state),
        "resumed_from": str(state),
        "changes": [{"field": name, "saved": before, "now": after} for name, before, after in changes],
        "saved_recipe": saved,
    })
    Path(out).mkdir(parents=True, exist_ok=True)
    folders.write_file_atomically(path, lambda tmp: tmp.write_text(json.dumps(entries, indent=2) + "\n",
                                                                   encoding="utf-8"))
    warnings.warn(f"{state}: resuming with a changed recipe: {describe_differences(changes)} (recorded in {path})",
                  stacklevel=2)


def _saved_step(state: Path) -> Optional[int]:
    """The optimizer steps a state folder had taken (None if its trainer state cannot be read)."""
    try:
        return int(folders.read_json(state / folders.TRAINER_STATE)["trainer"]["step"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def load_state(trainer: Trainer, state: Path) -> None:
    """``trainer.load_state(state)``; a state that does not fit the run (weights of another
    shape, the optimizer's groups, the batch position) is one short CheckpointError naming
    the folder, not a traceback."""
    try:
        trainer.load_state(state)
    except folders.CheckpointError as error:
        raise folders.CheckpointError(_shortened(str(error))) from None
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError, OSError) as error:  # damaged JSON, files
        message = _shortened(" ".join(str(error).split()) or type(error).__name__)
        raise folders.CheckpointError(f"{state}: the saved training state does not fit this run ({message})") from None


def _shortened(message: str) -> str:
    return message if len(message) <= LONGEST_MESSAGE else message[:LONGEST_MESSAGE] + " ..."
