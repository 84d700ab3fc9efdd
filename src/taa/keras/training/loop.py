"""The training loop of the Keras port: ``model.fit`` with the torch trainer's recipe.

The Keras twin of :mod:`taa.torch.training.loop`. A task supplies the same things -- a
stream of batches, a ``compute_loss(model, batch)`` returning (summed loss, number of
targets), optionally an ``evaluate(model)`` -- and the run follows the same recipe: Adam
with the paper's betas and epsilon (§5.3) computed as torch does (:mod:`taa.keras.training.adam`),
AdamW or Muon (:mod:`taa.keras.training.muon`) with the same split of the weights, the same
learning-rate schedule by step or by time within ``max_minutes``, gradient clipping, label
smoothing (the task's loss), bfloat16 mixed precision (Keras's ``mixed_bfloat16`` policy, set
by :func:`~taa.keras.training.setup_parallel`), validation every ``eval_every`` steps, early
stopping, the best-k weights and their average (§6.1), ``train.nonfinite``
(:mod:`taa.training.divergence`), tracking, and the progress bar. A run ends for one of
:data:`STOP_REASONS`.

How it runs: Keras's ``model.fit`` over the task's batch stream, on a
:class:`~taa.keras.training.step.TrainingModel` whose compiled step (XLA's ``jit_compile``
on TensorFlow, ``jax.jit`` on JAX; one compilation per batch shape) takes the gradient,
clips it, sets the rate, applies the update if it is finite and records the step's loss on
the device. A callback counts steps on the host and, every ``log_every`` steps, reads the
recorded losses once (the only wait for the device), updates the bar and the tracker and
tells the step where the clock stands; it validates, keeps the best weights, and stops the
run when its steps or its time are spent or validation stopped improving.

What the torch trainer does and this one does not, refused in one line before training
(:func:`check_train`): resuming (no ``state/`` is written), several processes, gradient
accumulation, layer-wise rate decay, ``train.threads`` and ``train.checkpoint_every``
(which only time resumable states).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import keras
import numpy as np

from taa import folders
from taa.config import ConfigError, TrainConfig
from taa.keras.training import checkpoint as ckpt
from taa.keras.training.adam import Adam
from taa.keras.training.distributed import MIXED_BFLOAT16, check_device
from taa.keras.training.losses import label_smoothed_cross_entropy
from taa.keras.training.muon import Muon
from taa.keras.training.step import (
    RUNNING, SKIPS_SPENT, WEIGHTS_BROKEN, LossModel, TrainingModel, batch_fields, check_backend,
)
from taa.keras.weights import ensure_built, variables
from taa.training.divergence import WEIGHTS_NOT_FINITE, diverged, first_failing_step, what_is_not_finite
from taa.training.dtypes import BFLOAT16
from taa.training.progress import TrainingProgress
from taa.training.results import TIME_BUDGET, TrainerState, TrainResult, is_hidden_matrix, ranks_among_the_best
from taa.training.results import record_interval, record_validation, report_skip, scheduled_rate, train_result
from taa.training.results import STOP_REASONS  # noqa: F401 (why a run ends, under the trainer's name)
from taa.training.schedules import schedule_from_config
from taa.tracking import Tracker

def check_train(train: TrainConfig, resume: bool = False, processes: int = 1) -> None:
    """Refuse, in one line, what the torch trainer does and this one does not (the module
    docstring), before any data is read; and a Keras backend it does not run on."""
    torch_only = "train with train.framework: torch"
    if resume:
        raise ConfigError(f"--resume: a train.framework=keras run saves no resumable state ({torch_only})")
    if processes > 1:
        raise ConfigError(f"--nproc {processes}: train.framework=keras trains on one process ({torch_only})")
    refusals = {
        "grad_accumulation": (train.grad_accumulation != 1, "the Keras trainer takes one batch a step"),
        "layer_lr_decay": (train.layer_lr_decay != 1.0, "the Keras trainer has one rate for every layer"),
        "threads": (train.threads is not None, "the Keras backend chooses its threads"),
        "checkpoint_every": (train.checkpoint_every != 0, "a Keras run saves no resumable state"),
    }
    for name, (refused, why) in refusals.items():
        if refused:
            raise ConfigError(f"train.{name}={getattr(train, name)!r}: {why} with train.framework=keras "
                              f"(leave train.{name} out, or {torch_only})")
    if train.device == "mps":
        raise ConfigError(f"train.device='mps': the Keras trainer runs on auto, cpu, cuda or cuda:N ({torch_only})")
    try:
        check_backend()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_device(train.device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the Keras backend, so a run on the CPU repeats."""
    keras.utils.set_random_seed(seed)


def count_parameters(model: keras.Model) -> int:
    """The model's number of trainable weights (the ``parameters`` metric; a tied weight once)."""
    ensure_built(model)
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def make_optimizer(model: keras.Model, train: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam(beta1, beta2, eps) as in §5.3; AdamW when weight decay is set; or Muon. Adam
    updates as torch's (:mod:`taa.keras.training.adam`).

    As the torch trainer's: decoupled weight decay shrinks only the matrices (linear maps
    and embeddings), not biases or norm gains; ``train.optimizer: muon`` updates the
    matrices inside the layers with Muon (:func:`is_hidden_matrix`, by torch name) and
    everything else with AdamW, at the same rate. The rate itself is set at every step.
    """
    named = {name: v for name, (v, _) in variables(ensure_built(model)).items() if v.trainable}
    decays = train.weight_decay > 0
    hyper = dict(learning_rate=float(train.lr), epsilon=train.adam_eps)
    if train.optimizer == "muon":
        hidden = [v for name, v in named.items() if is_hidden_matrix(name, tuple(v.shape))]
        optimizer = Muon(muon_variables=hidden, adam_beta_1=train.adam_beta1, adam_beta_2=train.adam_beta2,
                         momentum=train.muon_momentum, weight_decay=train.weight_decay if decays else None, **hyper)
    else:  # decoupled weight decay: AdamW
        optimizer = Adam(weight_decay=train.weight_decay if decays else None, beta_1=train.adam_beta1,
                         beta_2=train.adam_beta2, **hyper)
    if decays:
        optimizer.exclude_from_weight_decay(var_list=[v for v in named.values() if len(v.shape) < 2])
    return optimizer


def seq2seq_loss(smoothing: float, pad_id: int) -> Callable[[keras.Model, Any], tuple[Any, Any]]:
    """Label-smoothed cross-entropy of an encoder-decoder on a teacher-forced batch
    (``source``, ``target_input``, ``target_output``)."""

    def compute_loss(model: keras.Model, batch: Any) -> tuple[Any, Any]:
        logits = model(batch.source, batch.target_input)  # (b, n, v)
        return label_smoothed_cross_entropy(logits, batch.target_output, smoothing, ignore_index=pad_id)

    return compute_loss


class LossEvaluator:
    """``evaluator(model, batches)``: the mean of ``compute_loss`` over fixed batches, without
    dropout, in float64 sums; each batch shape compiled once (the compiled model is kept
    for the next call on the same model)."""

    def __init__(self, compute_loss: Callable[[keras.Model, Any], tuple[Any, Any]], jit_compile: bool = True) -> None:
        self.compute_loss, self.jit_compile = compute_loss, jit_compile
        self.loss_model: Optional[LossModel] = None

    def __call__(self, model: keras.Model, batches: Any) -> float:
        total, count = 0.0, 0
        for batch in batches:
            if self.loss_model is None or self.loss_model.model is not model:
                kind, _ = batch_fields(batch)
                self.loss_model = LossModel(model, self.compute_loss, kind, jit_compile=self.jit_compile)
            loss, n = self.loss_model.loss_of(batch)
            total, count = total + loss, count + n
        return total / max(1, count)


def _value(variable: keras.Variable) -> np.ndarray:
    return keras.ops.convert_to_numpy(variable.value)


class Trainer:
    """Trains ``model`` for ``train.steps`` optimizer steps; see the module docstring. The
    arguments are the torch :class:`~taa.torch.training.Trainer`'s.

    ``out`` is the run folder: ``best/step-N.safetensors`` (the kept best weights) and, at
    the end, the final ``model.safetensors`` (written by :func:`~taa.keras.training.save_checkpoint`).
    ``write_extra`` adds task files to each resumable state, which a Keras run does not
    write. ``model`` must compute in ``train.dtype`` (made under the policy
    :func:`~taa.keras.training.setup_parallel` sets). ``jit_compile``: compile the step with
    XLA on TensorFlow, ``jax.jit`` on JAX (False: a TensorFlow graph; JAX op by op).
    """

    def __init__(
        self,
        model: keras.Model,
        train: TrainConfig,
        compute_loss: Callable[[keras.Model, Any], tuple[Any, Any]],
        batches: Iterator[Any],
        *,
        d_model: int,
        evaluate: Optional[Callable[[keras.Model], dict[str, float]]] = None,
        out: Optional[str | Path] = None,
        write_extra: Optional[Callable[[Path], None]] = None,
        tracker: Optional[Tracker] = None,
        progress: bool | TrainingProgress = True,
        rate_unit: str = "tok",
        parallel: Any = None,
        jit_compile: bool = True,
    ) -> None:
        check_train(train)
        self.train, self.compute_loss, self.batches = train, compute_loss, batches
        self.evaluate, self.write_extra = evaluate, write_extra
        self.out = Path(out) if out is not None else None
        self.tracker = tracker or Tracker()
        self.progress, self.rate_unit, self.parallel = progress, rate_unit, parallel
        self.jit_compile = jit_compile
        self.model = ensure_built(model)
        computes, policy = ("bfloat16", MIXED_BFLOAT16) if train.dtype == BFLOAT16 else ("float32", "float32")
        if model.compute_dtype != computes:
            raise ValueError(f"train.dtype={train.dtype}: the model computes in {model.compute_dtype}; make it under "
                             f"keras.config.set_dtype_policy({policy!r}) (taa.keras.training.setup_parallel does)")
        self.optimizer = make_optimizer(self.model, train)
        self.schedule = schedule_from_config(train, d_model)  # multiplier of train.lr at a step
        self.state = TrainerState()
        self.lr: Optional[float] = None  # the rate of the last step the host has seen
        self.training_model: Optional[TrainingModel] = None  # made when fit sees the first batch
        self.logged = 0  # the step of the last log: the device's figures of the steps after it are unread
        self.clock = (0, 0.0)  # (step, schedule position) the device was last told the clock at (max_minutes)
        self.bar: Optional[TrainingProgress] = None

    def learning_rate(self, step: Optional[int] = None) -> float:
        """The rate the step after ``step`` (default: the last one) takes, as the device
        computes it: the schedule at the step, or at the clock's position within
        ``max_minutes`` if it is further along, times ``skip_lr_factor`` per skipped step
        (:func:`~taa.training.results.scheduled_rate`)."""
        return scheduled_rate(self.train, self.state, self.schedule, step)

    # ---------------------------------------------------------------- the run

    def fit(self) -> TrainResult:
        train, state = self.train, self.state
        bar = self.bar = self.progress if isinstance(self.progress, TrainingProgress) else TrainingProgress(
            train.steps, enabled=bool(self.progress), unit=self.rate_unit)
        if self.out is not None:  # what a killed run left behind
            folders.clean_run_folder(self.out)
        with bar:
            bar.update(state.step)
            if state.step < train.steps and not state.stop_reason:
                inputs = self._inputs()
                self.started = time.perf_counter() - state.seconds
                steps = train.steps - state.step
                self.training_model.fit(inputs, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False,
                                        callbacks=_AfterEachStep(self, steps))
                gc.collect()  # TensorFlow's reader of the batches, in a cycle: freed now, not at exit (a warning)
        return self.finish()

    def _inputs(self) -> Iterator[tuple[dict[str, np.ndarray]]]:
        """The task's batches as ``model.fit`` takes them (dicts of numpy arrays); the first
        one read now, to make the training model."""
        kind, first = batch_fields(next(self.batches))
        table = [self.schedule(step) for step in range(self.train.steps + 1)]
        model = self.training_model = TrainingModel(self.model, self.compute_loss, kind, self.train, table,
                                                    jit_compile=self.jit_compile)
        model.compile(optimizer=self.optimizer, jit_compile=self.jit_compile)
        self.optimizer.build(model.trainable_variables)  # the step reads its variables from the first one on
        if not all(layer.built for layer in model._flatten_layers()):  # Keras would build them on a batch of its own
            model(first)

        def stream() -> Iterator[tuple[dict[str, np.ndarray]]]:
            yield (first,)
            while True:
                yield (batch_fields(next(self.batches))[1],)

        return stream()

    def after_step(self) -> None:
        """What the host does once a step is done: validation, the log, the stop decision."""
        train, state, bar = self.train, self.state, self.bar
        state.step += 1
        state.seconds = time.perf_counter() - self.started
        last = state.step == train.steps
        out_of_time = train.max_minutes > 0 and state.seconds >= 60 * train.max_minutes
        if self.evaluate is not None and ((train.eval_every and state.step % train.eval_every == 0) or last
                                          or out_of_time):
            self._validate()  # may decide on early stopping
        if out_of_time and not last and not state.stop_reason:
            state.stop_reason = TIME_BUDGET
        if state.step % train.log_every == 0 or last or state.stop_reason:  # the last interval too
            self._log(bar)
        elif state.step == 1 and train.max_minutes > 0:  # the first step (and its compilation) is done
            self._sync()
            self._set_clock()
        if state.stop_reason:
            self.training_model.stop_training = True

    def _log(self, bar: TrainingProgress) -> None:
        """Read the steps since the last log from the device: the mean training loss of the
        interval, the tokens, the rate; update the bar and the tracker; tell the device
        where the clock stands (``max_minutes``)."""
        train, state, model = self.train, self.state, self.training_model
        self._check_steps()
        losses, counts, applied = (_value(v) for v in (model.step_losses, model.step_counts, model.step_applied))
        slots = [(step - 1) % train.log_every for step in range(self.logged + 1, state.step + 1)]
        kept = [slot for slot in slots if applied[slot]]  # the skipped steps' losses do not count
        window_loss = math.fsum(float(losses[slot]) for slot in kept)
        window_tokens = sum(int(counts[slot]) for slot in kept)
        state.tokens += sum(int(counts[slot]) for slot in slots)
        lr = self.lr = float(_value(self.optimizer.learning_rate))
        self.tracker.log_metrics(record_interval(state, bar, window_loss, window_tokens, lr), state.step)
        self.logged = state.step
        if train.max_minutes > 0:
            self._set_clock()

    def _set_clock(self) -> None:
        """Tell the device where the clock stands within ``max_minutes``, as a position of the
        schedule, and its pace per step since the last time it was told (0 the first time:
        that step includes the compilation), which the steps carry on until the next time."""
        train, state, model = self.train, self.state, self.training_model
        position = train.steps * state.seconds / (60 * train.max_minutes)
        last_step, last_position = self.clock
        pace = (position - last_position) / (state.step - last_step) if last_step else 0.0
        model.clock_at_step.assign(float(state.step))
        model.clock_position.assign(position)
        model.clock_pace.assign(pace)
        self.clock = (state.step, position)

    def _sync(self) -> None:
        """JAX's ``fit`` keeps the variables' values to itself between steps: put them back
        (TensorFlow's variables are always current)."""
        sync = getattr(self.training_model, "jax_state_sync", None)
        if sync is not None:
            sync()

    # ---------------------------------------------------------------- non-finite numbers

    def _check_steps(self) -> None:
        """Read what the device decided about the steps so far: the skipped ones (reported),
        and whether a step that was not finite halted the run (the DivergenceError the
        torch trainer raises at that step: the weights are those it started from)."""
        if self.training_model is None:
            return
        self._sync()
        model, state, train = self.training_model, self.state, self.train
        skipped = [int(step) for step in _value(model.skipped_at)[: int(_value(model.skipped))]]
        for step in skipped[len(state.skipped_steps):]:
            state.skipped_steps.append(step)
            self._report_skip(step)
        halt = int(_value(model.halt))
        if halt == RUNNING:
            return
        step, lr = int(_value(model.halt_step)), float(_value(model.halt_lr))
        if halt == WEIGHTS_BROKEN:
            raise diverged(step, WEIGHTS_NOT_FINITE, lr)
        problem = what_is_not_finite(float(_value(model.halt_loss)), float(_value(model.halt_norm)))
        spent = (len(state.skipped_steps), train.max_skipped_steps) if halt == SKIPS_SPENT else None
        raise diverged(step, problem, lr, spent=spent, failing_since=first_failing_step(step, state.skipped_steps))

    def _report_skip(self, step: int) -> None:
        """A skipped step goes to the tracker (the number skipped so far) and, as a line, to the bar."""
        skipped = report_skip(self.bar, self.train, self.state, step, "not finite", self.learning_rate(step))
        self.tracker.log_metrics(skipped, step)

    def _check_weights(self, model: keras.Model) -> None:
        """The last guard before weights are written or handed back: finite, or a DivergenceError."""
        if not all(np.isfinite(_value(v)).all() for v in model.trainable_variables):
            lr = self.lr if self.lr is not None else self.learning_rate()
            raise diverged(self.state.step, WEIGHTS_NOT_FINITE, lr)

    # ---------------------------------------------------------------- validation and the best weights

    def _validate(self) -> None:
        """Evaluate, track, keep the best k weights, count evaluations without improvement.

        A metric that is not finite never ranks among the best; the weights that fall out of
        the ranking are deleted at once (no saved state lists them)."""
        state, train = self.state, self.train
        self._check_steps()  # the weights evaluated are the run's current ones (and finite)
        metrics = self.evaluate(self.model)
        if self.out is not None:
            self._keep_best(metrics)
        self.tracker.log_metrics(metrics, state.step)
        dropped = record_validation(state, train, metrics)  # may decide on early stopping
        if self.out is not None:
            for step in dropped:
                folders.best_weights(self.out, step).unlink(missing_ok=True)

    def _keep_best(self, metrics: dict[str, float]) -> None:
        """Write this step's weights if they rank among the best."""
        if ranks_among_the_best(self.state, self.train, metrics):
            self._check_weights(self.model)
            ckpt.save_weights(self.model, folders.best_weights(self.out, self.state.step))

    def finish(self) -> TrainResult:
        """Load the best (or the average of the best k) weights, if any were kept."""
        state = self.state
        self._check_steps()
        if self.out is not None and state.best:
            paths = [folders.best_weights(self.out, step) for _, step in state.best]
            if self.train.average_best:
                ckpt.load_average(self.model, paths)
            else:
                ckpt.load_weights_file(self.model, paths[0])
        self._check_weights(self.model)
        return train_result(state)

    def load_state(self, directory: Path) -> None:
        """A Keras run saves no resumable state: refused (before training, by :func:`check_train`)."""
        raise folders.CheckpointError(f"{directory}: a train.framework=keras run cannot resume (no state is saved)")


class _AfterEachStep(keras.callbacks.CallbackList):
    """``model.fit``'s callbacks: :meth:`Trainer.after_step` after every batch. Keras's own
    list would turn each step's logs into Python floats, a wait for the device at every
    step; this one leaves them on the device (the trainer reads its figures when it logs)."""

    def __init__(self, trainer: Trainer, steps: int) -> None:
        super().__init__(add_history=True, add_progbar=False, model=trainer.training_model, verbose=0, epochs=1,
                         steps=steps)
        self.trainer = trainer

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        self.trainer.after_step()


def fit(
    model: keras.Model,
    batches: Iterator[Any],
    train: TrainConfig,
    compute_loss: Callable[[keras.Model, Any], tuple[Any, Any]],
    *,
    d_model: int,
    progress: bool = True,
    evaluate: Optional[Callable[[keras.Model], dict[str, float]]] = None,
) -> TrainResult:
    """Train without a run folder (no checkpoints): the shortest way to use the loop."""
    trainer = Trainer(model, train, compute_loss, batches, d_model=d_model, evaluate=evaluate, progress=progress)
    return trainer.fit()
