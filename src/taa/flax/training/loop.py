"""The training loop of the Flax port: the torch trainer's recipe, one compiled step.

The Flax twin of :mod:`taa.torch.training.loop`. A task supplies the same things -- a
stream of batches, a ``compute_loss(model, batch)`` returning (summed loss, number of
targets), optionally an ``evaluate(model)`` -- and the run follows the same recipe: Adam
with the paper's betas and epsilon (§5.3) as torch computes it, AdamW or Muon with the
same split of the weights (:mod:`taa.flax.training.adam`, :mod:`taa.flax.training.muon`,
optax transformations), the same learning-rate schedule by step or by time within
``max_minutes``, gradient accumulation and clipping, label smoothing (the task's loss),
bfloat16 mixed precision (float32 weights, bfloat16 compute), validation every
``eval_every`` steps, early stopping, the best-k weights and their average (§6.1),
``train.nonfinite`` (:mod:`taa.training.divergence`), resumable state, tracking and the
progress bar. A run ends for one of :data:`STOP_REASONS`.

How it runs: the host drives the steps one at a time, as the torch trainer does; each is
one call of the compiled step (:class:`~taa.flax.training.step.TrainStep`: ``jax.jit``,
one compilation per shape of the step's batches, counted in :attr:`Trainer.compiles` and
the result's ``compiles``), which takes the gradient, clips it, applies the update only
when it is finite and hands back the step's loss, tokens and gradient norm. The host keeps
the books between steps with the other trainers' code (:mod:`taa.training.results`).

Resuming is exact: the state folder holds the weights, the optimizer's state, the schedule
position, the model's random streams (dropout), Python's and numpy's generators and the
batch stream's position (:mod:`taa.flax.training.checkpoint`), so a run stopped at any
step and resumed from its last state ends with the same weights as a run never
interrupted. States and best weights are written and cleaned up in torch's order.

What the torch trainer does and this one does not, refused in one line before training
(:func:`check_train`): several processes and layer-wise rate decay. ``train.threads``,
which changes no result, is left to XLA, with a warning (:func:`taa.flax.training.setup_parallel`).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from taa import folders
from taa.config import ConfigError, TrainConfig
from taa.flax.training import checkpoint as ckpt
from taa.flax.training.adam import adamw
from taa.flax.training.distributed import Parallel, check_device
from taa.flax.training.losses import label_smoothed_cross_entropy
from taa.flax.training.muon import muon
from taa.flax.training.step import TrainStep, batch_fields, computing_in, leaf_name
from taa.flax.weights import parameters, tied_weights
from taa.safetensors_file import read_tensors
from taa.training.divergence import SKIP, WEIGHTS_NOT_FINITE, LastState, diverged, skip_or_stop, what_is_not_finite
from taa.training.progress import TrainingProgress
from taa.training.results import TIME_BUDGET, TrainerState, TrainResult, is_hidden_matrix, ranks_among_the_best
from taa.training.results import STOP_REASONS  # noqa: F401 (why a run ends, under the trainer's name)
from taa.training.results import record_interval, record_validation, report_skip, scheduled_rate, train_result
from taa.training.schedules import schedule_from_config
from taa.training.state import check_best_weights, host_random_state, read_trainer_state
from taa.training.state import restore_host_random_state, restore_trainer_state
from taa.tracking import Tracker

# The optimizer's settings a state keeps (optimizer.json) and a resume must find unchanged.
OPTIMIZER_SETTINGS = ("optimizer", "adam_beta1", "adam_beta2", "adam_eps", "weight_decay", "muon_momentum")


def check_train(train: TrainConfig, resume: bool = False, processes: int = 1) -> None:
    """Refuse, in one line, what the torch trainer does and this one does not (the module
    docstring), before any data is read; and a GPU that JAX does not see."""
    torch_only = "train with train.framework: torch"
    if processes > 1:
        raise ConfigError(f"--nproc {processes}: train.framework=flax trains on one process ({torch_only})")
    refusals = {
        "layer_lr_decay": (train.layer_lr_decay != 1.0, "the Flax trainer has one rate for every layer"),
    }
    for name, (refused, why) in refusals.items():
        if refused:
            raise ConfigError(f"train.{name}={getattr(train, name)!r}: {why} with train.framework=flax "
                              f"(leave train.{name} out, or {torch_only})")
    if train.device == "mps":
        raise ConfigError(f"train.device='mps': the Flax trainer runs on auto, cpu, cuda or cuda:N ({torch_only})")
    check_device(train.device)


def seed_everything(seed: int) -> None:
    """Seed Python and NumPy. JAX has no global generator: a model draws its initial weights
    and its dropout masks from the ``nnx.Rngs`` it is built with (:func:`build_model`)."""
    random.seed(seed)
    np.random.seed(seed)


def build_model(model_class: type, config: Any, seed: int) -> nnx.Module:
    """A new ``model_class`` of ``config`` whose random streams (initial weights, dropout)
    are seeded with ``seed``."""
    return model_class(config, rngs=nnx.Rngs(seed))


def count_parameters(model: nnx.Module) -> int:
    """The model's number of weights (the ``parameters`` metric; a tied weight once)."""
    return sum(int(np.prod(param[...].shape)) for param in parameters(model).values())


def optimizer_settings(train: TrainConfig) -> dict[str, Any]:
    """The recipe's optimizer settings, which a resumable state records (:data:`OPTIMIZER_SETTINGS`)."""
    return {name: getattr(train, name) for name in OPTIMIZER_SETTINGS}


def make_optimizer(model: nnx.Module, train: TrainConfig) -> optax.GradientTransformation:
    """Adam(beta1, beta2, eps) as in §5.3; AdamW when weight decay is set; or Muon; each
    updating as torch's, with the rate in its state (the trainer sets it at every step).

    As the torch trainer's: decoupled weight decay shrinks only the matrices (linear maps
    and embeddings), not biases or norm gains; ``train.optimizer: muon`` updates the
    matrices inside the layers with Muon (:func:`is_hidden_matrix`, by torch name) and
    everything else with AdamW, at the same rate. The choices are functions of the
    parameters' state (``nnx.Param``), as optax's masks are; a weight ``model`` ties
    under several torch names is hidden if it is by all of them.
    """
    settings = dict(b1=train.adam_beta1, b2=train.adam_beta2, eps=train.adam_eps, weight_decay=train.weight_decay,
                    decay_mask=matrices)
    if train.optimizer == "muon":
        hidden = functools.partial(hidden_matrices, tied=tied_weights(model))
        return muon(train.lr, hidden=hidden, momentum=train.muon_momentum, **settings)
    return adamw(train.lr, **settings)


def matrices(params: Any) -> Any:
    """True for each weight with two or more dimensions (what weight decay shrinks)."""
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def hidden_matrices(params: Any, tied: Optional[dict[str, str]] = None) -> Any:
    """True for each weight Muon updates (:func:`is_hidden_matrix`) by its torch name, and by
    every other name it has (``tied``: alias -> source, :func:`taa.flax.weights.tied_weights`;
    the state names a tied weight by any one of them)."""
    names: dict[str, set[str]] = {}  # each name of a tied weight -> all its names
    for alias, source in (tied or {}).items():
        group = names.get(source, {source}) | names.get(alias, {alias})
        for name in group:
            names[name] = group

    def hidden(path: tuple, param: Any) -> bool:
        name = leaf_name(path)
        return all(is_hidden_matrix(n, tuple(param.shape)) for n in names.get(name, {name}))

    return jax.tree_util.tree_map_with_path(hidden, params)


def seq2seq_loss(smoothing: float, pad_id: int) -> Callable[[nnx.Module, Any], tuple[jax.Array, jax.Array]]:
    """Label-smoothed cross-entropy of an encoder-decoder on a teacher-forced batch
    (``source``, ``target_input``, ``target_output``)."""

    def compute_loss(model: nnx.Module, batch: Any) -> tuple[jax.Array, jax.Array]:
        logits = model(batch.source, batch.target_input)  # (b, n, v)
        return label_smoothed_cross_entropy(logits, batch.target_output, smoothing, ignore_index=pad_id)

    return compute_loss


class LossEvaluator:
    """``evaluator(model, batches)``: the mean of ``compute_loss`` over fixed batches, without
    dropout, in float64 sums; compiled once per batch shape (and kept for the next call on
    the same model). ``dtype``: the number format the model computes in (bfloat16: the
    weights cast to it, as in training)."""

    def __init__(self, compute_loss: Callable[[nnx.Module, Any], tuple[Any, Any]], dtype: str = "float32") -> None:
        self.compute_loss, self.cast = compute_loss, computing_in(dtype)
        self.model: Optional[nnx.Module] = None  # the model the compiled forward was made for
        self.compiles = 0

    def __call__(self, model: nnx.Module, batches: Any) -> float:
        model.eval()
        if self.model is not model:  # its graph (structure, evaluation mode), fixed in the compiled forward
            self.model, graphdef = model, nnx.graphdef(model)
            self.compiled = jax.jit(functools.partial(self._loss, graphdef), static_argnums=(2,))
        state = nnx.state(model)
        total, count = 0.0, 0
        for batch in batches:
            kind, fields = batch_fields(batch)
            loss, n = jax.device_get(self.compiled(state, fields, kind))
            total, count = total + float(loss), count + int(n)
        return total / max(1, count)

    def _loss(self, graphdef: nnx.GraphDef, state: nnx.State, fields: dict, kind: Callable[..., Any]):
        self.compiles += 1  # once per compilation (a trace)
        model = nnx.merge(graphdef, self.cast(state), copy=True)  # Variables of this trace
        loss, count = self.compute_loss(model, kind(**fields))
        return loss.astype(jnp.float32), jnp.asarray(count, jnp.int32)


class Trainer:
    """Trains ``model`` for ``train.steps`` optimizer steps; see the module docstring. The
    arguments are the torch :class:`~taa.torch.training.Trainer`'s.

    ``out`` is the run folder: ``state/`` (resumable), ``best/step-N.safetensors`` (the
    kept best weights) and, at the end, the final ``model.safetensors`` (written by
    :func:`~taa.flax.training.save_checkpoint`). ``write_extra`` adds task files (e.g. the
    tokenizer) to every state folder. ``rate_unit`` names what ``compute_loss`` counts, for
    the progress bar: "tok" (tokens) or "sent" (sentences). ``progress`` is on or off, or
    the :class:`TrainingProgress` of a whole run. ``parallel``: the run's place
    (:func:`~taa.flax.training.setup_parallel`); one process on JAX's default device by default.

    The model object holds the run's weights whenever the trainer hands it over (to
    ``evaluate``, at the end, after an error); in between, the compiled step's state is
    the current one (:class:`~taa.flax.training.step.TrainStep`).
    """

    def __init__(
        self,
        model: nnx.Module,
        train: TrainConfig,
        compute_loss: Callable[[nnx.Module, Any], tuple[Any, Any]],
        batches: Iterator[Any],
        *,
        d_model: int,
        evaluate: Optional[Callable[[nnx.Module], dict[str, float]]] = None,
        out: Optional[str | Path] = None,
        write_extra: Optional[Callable[[Path], None]] = None,
        tracker: Optional[Tracker] = None,
        progress: bool | TrainingProgress = True,
        rate_unit: str = "tok",
        parallel: Optional[Parallel] = None,
    ) -> None:
        check_train(train)
        self.train, self.compute_loss, self.batches = train, compute_loss, batches
        self.evaluate, self.write_extra = evaluate, write_extra
        self.out = Path(out) if out is not None else None
        self.tracker = tracker or Tracker()
        self.progress, self.rate_unit, self.parallel = progress, rate_unit, parallel
        self.model = model
        self.optimizer = make_optimizer(model, train)
        self.step = TrainStep(model, self.optimizer, compute_loss, train)  # the weights from now on
        self.schedule = schedule_from_config(train, d_model)  # multiplier of train.lr at a step
        self.state = TrainerState()
        self.resumed_from: Optional[Path] = None  # the run folder whose state load_state read
        self.last_state: Optional[tuple[Path, int]] = None  # the newest state on disk: (folder, step)
        self.updated_since_state = False  # an update was applied after the newest state was saved or loaded
        self.dropped_best: list[int] = []  # steps whose best weights go once a saved state no longer lists them
        self.lr: Optional[float] = None  # the rate of the last step taken

    @property
    def compiles(self) -> int:
        """How many times the training step was compiled (once per shape of its batches)."""
        return self.step.compiles

    def learning_rate(self) -> float:
        """The rate for the next step: the schedule at the step, or at the clock's position
        within ``max_minutes``, lowered for each skipped step (:func:`~taa.training.results.scheduled_rate`)."""
        return scheduled_rate(self.train, self.state, self.schedule)

    # ---------------------------------------------------------------- one step

    def _step(self) -> tuple[float, int, float, str]:
        """One optimizer step over ``grad_accumulation`` batches: (loss sum, tokens, lr,
        what was not finite). The compiled step applies the update only when the loss and
        the gradient norm are finite; otherwise the step is skipped (what was not finite is
        returned) or the run stops (:meth:`_skip_or_stop`)."""
        batches = [next(self.batches) for _ in range(self.train.grad_accumulation)]
        lr = self.lr = self.learning_rate()
        figures = self.step(batches, lr)
        problem = what_is_not_finite(figures.loss, figures.grad_norm)
        if problem:
            self._skip_or_stop(problem, lr)
            return figures.loss, figures.tokens, lr, problem
        self.updated_since_state = True
        return figures.loss, figures.tokens, lr, ""

    # ---------------------------------------------------------------- non-finite numbers

    def _skip_or_stop(self, problem: str, lr: float) -> None:
        """A step whose loss or gradient is not finite: record it as skipped, or raise a
        DivergenceError (``train.nonfinite``). Weights that are no longer finite stop the
        run whatever the policy: skipping cannot mend them."""
        step = self.state.step + 1
        if self.train.nonfinite == SKIP and not self.step.weights_are_finite():
            raise diverged(step, WEIGHTS_NOT_FINITE, lr, self._last_state())
        skip_or_stop(self.train, step, problem, lr, self.state.skipped_steps, self._last_state())
        self.state.skipped_steps.append(step)

    def _check_weights(self) -> None:
        """The last guard before weights are written or handed back: finite, or a DivergenceError."""
        if not self.step.weights_are_finite():
            lr = self.lr if self.lr is not None else self.learning_rate()
            raise diverged(self.state.step, WEIGHTS_NOT_FINITE, lr, self._last_state())

    def _last_state(self) -> Optional[LastState]:
        """Where the run can resume from, for a DivergenceError; None without a run folder."""
        if self.last_state is not None:
            return LastState(str(self.last_state[0]), self.last_state[1], unchanged_since=not self.updated_since_state)
        return LastState(str(self.out / folders.STATE)) if self.out is not None else None

    # ---------------------------------------------------------------- the run

    def fit(self) -> TrainResult:
        try:
            return self._fit()
        finally:  # the model object holds the weights the run got to, whatever stopped it
            self.step.write_to(self.model)

    def _fit(self) -> TrainResult:
        train, state = self.train, self.state
        started = time.perf_counter() - state.seconds
        window_loss, window_tokens = 0.0, 0
        bar = self.progress
        if not isinstance(bar, TrainingProgress):
            bar = TrainingProgress(train.steps, enabled=bar, unit=self.rate_unit)
        if self.out is not None:  # what a killed run left behind; a resumed run's state says which best stay
            resumed_here = self.resumed_from is not None and self.resumed_from.resolve() == self.out.resolve()
            folders.clean_run_folder(self.out, [step for _, step in state.best] if resumed_here else None)
            if resumed_here:
                self.last_state = (self.out / folders.STATE, state.step)  # where clean_run_folder settled it
        with bar:
            bar.update(state.step)
            while state.step < train.steps and not state.stop_reason:
                loss_sum, tokens, lr, skipped = self._step()
                state.step += 1
                state.tokens += tokens
                if skipped:
                    self.tracker.log_metrics(report_skip(bar, train, state, state.step, skipped, self.learning_rate()),
                                             state.step)
                else:
                    window_loss += loss_sum
                    window_tokens += tokens
                state.seconds = time.perf_counter() - started
                last = state.step == train.steps
                out_of_time = train.max_minutes > 0 and state.seconds >= 60 * train.max_minutes
                evaluated = False
                if self.evaluate is not None and (
                    (train.eval_every and state.step % train.eval_every == 0) or last or out_of_time
                ):
                    self._validate()  # may decide on early stopping
                    evaluated = True
                if out_of_time and not last and not state.stop_reason:
                    state.stop_reason = TIME_BUDGET
                if state.step % train.log_every == 0 or last or state.stop_reason:  # the last interval too
                    self.tracker.log_metrics(record_interval(state, bar, window_loss, window_tokens, lr), state.step)
                    window_loss, window_tokens = 0.0, 0
                every = train.checkpoint_every or train.eval_every
                if self.out is not None and ((every and state.step % every == 0) or evaluated or last
                                             or state.stop_reason):
                    self.save_state(self.out / folders.STATE)
                    self._remove_dropped_best()
        self.tracker.log_metrics({"train_compiles": float(self.compiles),
                                  "train_compile_seconds": self.step.compile_seconds}, state.step)
        return self.finish()

    def _remove_dropped_best(self) -> None:
        """Delete the best weights that fell out of the ranking, now that the saved state no
        longer lists them (a kill leaves at worst a file no state lists)."""
        for step in self.dropped_best:
            folders.best_weights(self.out, step).unlink(missing_ok=True)
        self.dropped_best = []

    def _validate(self) -> None:
        """Evaluate, track, keep the best k weights, count evaluations without improvement
        (:func:`~taa.training.results.record_validation`). The weights that fall out of the
        ranking are deleted only after the next saved state (:meth:`_remove_dropped_best`)."""
        model = self.step.write_to(self.model)
        metrics = self.evaluate(model)
        model.train()
        if self.out is not None and ranks_among_the_best(self.state, self.train, metrics):
            self._check_weights()
            ckpt.save_weights(model, folders.best_weights(self.out, self.state.step))
        self.tracker.log_metrics(metrics, self.state.step)
        dropped = record_validation(self.state, self.train, metrics)  # may decide on early stopping
        if self.out is not None:
            self.dropped_best += dropped

    def finish(self) -> TrainResult:
        """Load the best (or the average of the best k) weights, if any were kept."""
        state, model = self.state, self.step.write_to(self.model)
        if self.out is not None and state.best:
            paths = [folders.best_weights(self.out, step) for _, step in state.best]
            if self.train.average_best:
                ckpt.load_average(model, paths)
            else:
                ckpt.load_weights_file(model, paths[0])
            self.step.read_from(model)
        self._check_weights()
        model.eval()
        return dataclasses.replace(train_result(state), compiles=self.compiles,
                                   compile_seconds=self.step.compile_seconds,
                                   first_compile_seconds=self.step.first_compile_seconds)

    # ---------------------------------------------------------------- resumable state

    def save_state(self, directory: Path) -> None:
        """Write everything a resumed run needs, atomically (a kill keeps the previous state).
        Weights that are not finite are never written: a DivergenceError instead."""
        self._check_weights()
        model = self.step.write_to(self.model)

        def write(staging: Path) -> None:
            ckpt.save_weights(model, staging / folders.WEIGHTS)
            ckpt.save_optimizer(self.step.opt_state, optimizer_settings(self.train), staging)
            trainer = {"trainer": asdict(self.state), **host_random_state(self.batches)}
            (staging / folders.TRAINER_STATE).write_text(folders.strict_json(trainer))
            ckpt.save_random_streams(model, staging / folders.RANDOM_STATE)
            if self.write_extra is not None:
                self.write_extra(staging)

        folders.write_folder_atomically(directory, write)
        self.last_state, self.updated_since_state = (Path(directory), self.state.step), False

    def load_state(self, directory: Path) -> None:
        """Continue from a state folder written by :meth:`save_state`.

        Every file is checked as it is read, each problem one CheckpointError naming the
        file and the field (:mod:`taa.flax.training.checkpoint`), and before any training.
        Every best weights file the state lists must be in the run folder's ``best/`` and
        sound: the run ends with them.
        """
        directory = folders.find_state_folder(directory)
        model = self.step.write_to(self.model)
        ckpt.load_weights_file(model, directory / folders.WEIGHTS)
        opt_state = ckpt.load_optimizer(self.step.opt_state, optimizer_settings(self.train), directory)
        saved = read_trainer_state(directory / folders.TRAINER_STATE, TrainerState)  # checked, naming the file
        ckpt.load_random_streams(model, directory / folders.RANDOM_STATE)
        state = restore_trainer_state(saved["trainer"], self.train)
        check_best_weights(directory, state, lambda path: read_tensors(path, "np"))
        self.step.read_from(model)
        self.step.opt_state, self.state = opt_state, state
        self.resumed_from, self.last_state = directory.parent, (directory, self.state.step)
        self.updated_since_state = False
        restore_host_random_state(saved, self.batches)


def fit(
    model: nnx.Module,
    batches: Iterator[Any],
    train: TrainConfig,
    compute_loss: Callable[[nnx.Module, Any], tuple[Any, Any]],
    *,
    d_model: int,
    progress: bool = True,
    evaluate: Optional[Callable[[nnx.Module], dict[str, float]]] = None,
) -> TrainResult:
    """Train without a run folder (no checkpoints): the shortest way to use the loop."""
    trainer = Trainer(model, train, compute_loss, batches, d_model=d_model, evaluate=evaluate, progress=progress)
    return trainer.fit()
