"""One training step as ``model.fit`` runs it: compiled once per batch shape, no host round trip.

:class:`LossModel` makes a task's ``compute_loss(model, batch)`` -- (summed loss, number of
targets) -- a Keras model, so that Keras compiles it (``jit_compile``: XLA on TensorFlow,
``jax.jit`` on JAX): validation runs it with ``predict_on_batch``.

:class:`TrainingModel` adds the step ``model.fit`` calls. What the torch
:class:`~taa.torch.training.Trainer` does on the host after each backward pass happens here
on the device, inside the compiled step, so the host waits for nothing until it logs:

1. the gradient of the mean loss per target token of the batch;
2. its global norm, then clipping to ``train.grad_clip`` as ``torch.nn.utils.clip_grad_norm_``
   does (the factor ``min(1, max_norm / (norm + 1e-6))``);
3. the learning rate: ``train.lr`` times the schedule (a table of
   :func:`taa.training.schedules.schedule_from_config` by step) at the step, or at the
   position of the clock within a ``max_minutes`` budget if it is further along (the host
   sets it when it logs, with the pace since the start, and the step carries it on), times
   ``train.skip_lr_factor`` per skipped step;
4. the optimizer's update, kept only when the loss and the gradient norm are finite
   (:mod:`taa.training.divergence`): otherwise every weight and optimizer variable gets
   its value from before the step back (a select, no branch: the same code runs on every
   backend). ``train.nonfinite: stop`` then halts the run -- no later step changes a
   weight -- and records the step, the loss, the norm and the rate, which the host turns
   into the DivergenceError when it next looks; ``skip`` records the step among the
   skipped ones and halts only once ``max_skipped_steps`` are spent, or when the weights
   themselves are no longer finite;
5. the loss sum and target count of the step, in a buffer of ``log_every`` slots the host
   reads when it logs (their sums in float64, as the torch trainer adds its floats).

Backend-specific code, only where ``model.fit`` cannot do without it: a custom
``train_step`` must take the gradient itself, with ``tf.GradientTape`` on TensorFlow and
``jax.value_and_grad`` over ``stateless_call`` on JAX; both hand the gradient to the one
:meth:`TrainingModel.apply_gradients` above, which uses ``keras.ops`` only. The torch
backend of Keras is not supported (taa trains torch models with :mod:`taa.torch` itself).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from taa.config import TrainConfig
from taa.training.divergence import SKIP

# What halted a run (TrainingModel.halt): nothing yet, a non-finite step under
# train.nonfinite: stop, one more under skip once max_skipped_steps are spent, or weights
# that are no longer finite under skip (skipping cannot mend them).
RUNNING, NOT_FINITE, SKIPS_SPENT, WEIGHTS_BROKEN = 0, 1, 2, 3

BACKENDS = ("tensorflow", "jax")  # the Keras backends the trainer runs on


def check_backend() -> str:
    """Keras's backend, if the trainer runs on it; else a one-line ValueError."""
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise ValueError(f"KERAS_BACKEND={backend}: the Keras trainer runs on {' or '.join(BACKENDS)} "
                         "(train torch models with train.framework: torch)")
    return backend


def batch_fields(batch: Any) -> tuple[Callable[..., Any], dict[str, np.ndarray]]:
    """A task's batch (a dataclass of tensors, or a dict) -> (how to rebuild one from
    fields, its fields as numpy arrays; token ids as int32, which every backend takes)."""
    if dataclasses.is_dataclass(batch):
        kind, fields = type(batch), {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    elif isinstance(batch, dict):
        kind, fields = dict, dict(batch)
    else:
        raise TypeError(f"a batch is a dataclass or a dict of arrays, not a {type(batch).__name__}")
    arrays = {}
    for name, value in fields.items():
        array = np.asarray(value)  # a torch tensor on the CPU, a numpy array
        arrays[name] = array.astype(np.int32) if array.dtype.kind in "iu" else array
    return kind, arrays


class LossModel(keras.Model):
    """``compute_loss(model, batch)`` of a task as a Keras model: called on a dict of a
    batch's fields, it returns (summed loss, number of targets). ``batch_kind`` rebuilds the
    task's batch from the fields (:func:`batch_fields`)."""

    def __init__(self, model: keras.Model, compute_loss: Callable[[keras.Model, Any], tuple[Any, Any]],
                 batch_kind: Callable[..., Any], jit_compile: bool = True, **kwargs) -> None:
        super().__init__(dtype="float32", **kwargs)  # the wrapper computes the loss in float32
        self.model = model
        self.compute_loss_of_batch = compute_loss
        self.batch_kind = batch_kind
        self.built = True  # the model is built; this wrapper has no weights of its own
        self.compile(jit_compile=jit_compile)

    def call(self, batch: dict[str, Any], training=None):
        return self.compute_loss_of_batch(self.model, self.batch_kind(**batch))

    def loss_of(self, batch: Any) -> tuple[float, int]:
        """(summed loss, number of targets) of one batch, without dropout."""
        _, arrays = batch_fields(batch)
        loss_sum, count = self.predict_on_batch(arrays)
        return float(loss_sum), int(count)


class TrainingModel(LossModel):
    """The model, the task's loss and the trainer's step; ``model.fit`` trains it.

    ``schedule`` is the rate's multiplier at each step 0 .. ``train.steps``
    (:func:`taa.training.schedules.schedule_from_config`, tabled). The bookkeeping variables
    are this model's non-trainable ones, never among the weights the run saves (``model``'s).
    """

    def __init__(self, model: keras.Model, compute_loss, batch_kind, train: TrainConfig,
                 schedule: Sequence[float], jit_compile: bool = True, **kwargs) -> None:
        super().__init__(model, compute_loss, batch_kind, jit_compile=jit_compile, **kwargs)
        self.train = train
        slots, skips = train.log_every, max(1, train.max_skipped_steps)

        def variable(name: str, shape: tuple = (), dtype: str = "float32", value: Any = 0):
            return self.add_weight(shape=shape, dtype=dtype, trainable=False, name=name,
                                   initializer=keras.initializers.Constant(value))

        self.schedule = self.add_weight(shape=(len(schedule),), dtype="float32", trainable=False, name="schedule",
                                        initializer=keras.initializers.Constant(np.asarray(schedule, np.float32)))
        self.step = variable("step", dtype="int32")  # steps taken (skipped ones too)
        # the clock's position within max_minutes, as schedule steps: position_at + pace * (step - at_step)
        self.clock_at_step, self.clock_position, self.clock_pace = (variable(name) for name in (
            "clock_at_step", "clock_position", "clock_pace"))
        self.step_losses, self.step_counts, self.step_applied = (variable(name, (slots,)) for name in (
            "step_losses", "step_counts", "step_applied"))
        self.skipped = variable("skipped", dtype="int32")  # steps skipped so far
        self.skipped_at = variable("skipped_at", (skips,), "int32", -1)  # which (1-based, as the torch trainer counts)
        self.halt = variable("halt", dtype="int32")  # RUNNING, or what halted the run
        self.halt_step = variable("halt_step", dtype="int32")  # the step that halted it (1-based)
        self.halt_loss, self.halt_norm, self.halt_lr = (variable(name) for name in (
            "halt_loss", "halt_norm", "halt_lr"))

    # ---------------------------------------------------------------- the gradient (per backend)

    def train_step(self, *arguments):
        if keras.backend.backend() == "jax":
            return self._jax_train_step(*arguments)
        return self._tensorflow_train_step(*arguments)

    def _tensorflow_train_step(self, data):
        import tensorflow as tf  # the gradient: GradientTape (model.fit has no backend-neutral one)

        batch, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss_sum, count = self(batch, training=True)
            objective = loss_sum / ops.cast(ops.maximum(count, 1), "float32")  # the mean per target token
        gradients = tape.gradient(objective, self.trainable_variables)
        # an embedding's gradient comes as rows (IndexedSlices): dense, for the norm and the select
        gradients = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients]
        self.apply_gradients(loss_sum, count, gradients)
        return {"steps": self.step.value}  # left on the device: the host reads the step's figures when it logs

    def _jax_train_step(self, state, data):
        import jax  # the gradient: value_and_grad over the stateless call (model.fit has no backend-neutral one)

        trainable, non_trainable, optimizer_variables, metrics_variables = state
        batch, _, _ = keras.utils.unpack_x_y_sample_weight(data)

        def objective(trainable):
            (loss_sum, count), updated = self.stateless_call(trainable, non_trainable, batch, training=True)
            return loss_sum / ops.cast(ops.maximum(count, 1), "float32"), (loss_sum, count, updated)

        (_, (loss_sum, count, non_trainable)), gradients = jax.value_and_grad(objective, has_aux=True)(trainable)
        held = [*self.trainable_variables, *self.non_trainable_variables, *self.optimizer.variables]
        values = [*trainable, *non_trainable, *optimizer_variables]
        with keras.StatelessScope(state_mapping=list(zip(held, values))) as scope:
            self.apply_gradients(loss_sum, count, gradients)
        current = [scope.get_current_value(v) for v in held]
        trainable = current[: len(trainable)]
        non_trainable = current[len(trainable): len(trainable) + len(non_trainable)]
        optimizer_variables = current[len(trainable) + len(non_trainable):]
        logs = {"steps": scope.get_current_value(self.step)}
        return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

    # ---------------------------------------------------------------- the update (every backend)

    def apply_gradients(self, loss_sum, count, gradients: list) -> None:
        """Steps 2 to 5 of the module docstring, on the device."""
        train, optimizer = self.train, self.optimizer
        pairs = [(g, v) for g, v in zip(gradients, self.trainable_variables) if g is not None]
        gradients = [g for g, _ in pairs]
        norm = ops.sqrt(sum(ops.sum(ops.square(ops.cast(g, "float32"))) for g in gradients))
        if train.grad_clip:
            factor = ops.minimum(1.0, train.grad_clip / (norm + 1e-6))
            gradients = [g * ops.cast(factor, g.dtype) for g in gradients]
        step = ops.copy(self.step.value)  # values, not the variables (TensorFlow reads a variable where it is used)
        lr = self._learning_rate(step)
        optimizer.learning_rate.assign(lr)

        finite = ops.logical_and(ops.all(ops.isfinite(loss_sum)), ops.all(ops.isfinite(norm)))
        running = ops.equal(self.halt.value, RUNNING)
        applied = ops.logical_and(finite, running)
        guarded = [v for v in [*self.trainable_variables, *optimizer.variables] if v is not optimizer.learning_rate]
        before = [ops.copy(v.value) for v in guarded]
        optimizer.apply(gradients, [v for _, v in pairs])
        for variable, old in zip(guarded, before):  # a step that is not finite changes nothing
            variable.assign(ops.where(applied, variable.value, old))

        self._record_halt_or_skip(ops.logical_and(ops.logical_not(finite), running), step, loss_sum, norm, lr,
                                  before[: len(self.trainable_variables)])
        slot = ops.equal(ops.arange(train.log_every, dtype="int32"), step % train.log_every)
        for buffer, value in ((self.step_losses, loss_sum), (self.step_counts, ops.cast(count, "float32")),
                              (self.step_applied, ops.cast(applied, "float32"))):
            buffer.assign(ops.where(slot, value, buffer.value))
        self.step.assign(step + 1)

    def _learning_rate(self, step):
        """train.lr x schedule at the step (or the clock's position, if further) x the skip factor."""
        train = self.train
        position = ops.cast(step, "float32")
        if train.max_minutes > 0:
            clock = self.clock_position.value + self.clock_pace.value * (position - self.clock_at_step.value)
            position = ops.maximum(position, ops.floor(clock))
        index = ops.cast(ops.minimum(position, float(train.steps)), "int32")
        lowered = ops.power(train.skip_lr_factor, ops.cast(self.skipped.value, "float32"))
        return train.lr * ops.take(self.schedule.value, index) * lowered

    def _record_halt_or_skip(self, failed, step, loss_sum, norm, lr, weights) -> None:
        """A step that failed (not finite, while running): skip it or halt the run."""
        train = self.train
        if train.nonfinite == SKIP:
            weights_finite = ops.cond(failed, lambda: ops.all(ops.stack([ops.all(ops.isfinite(w)) for w in weights])),
                                      lambda: ops.convert_to_tensor(True))
            code = ops.where(ops.logical_not(weights_finite), WEIGHTS_BROKEN,
                             ops.where(self.skipped.value >= train.max_skipped_steps, SKIPS_SPENT, RUNNING))
            skipping = ops.logical_and(failed, ops.equal(code, RUNNING))
            slot = ops.logical_and(ops.equal(ops.arange(self.skipped_at.shape[0], dtype="int32"), self.skipped.value),
                                   skipping)
            self.skipped_at.assign(ops.where(slot, step + 1, self.skipped_at.value))
            self.skipped.assign(self.skipped.value + ops.cast(skipping, "int32"))
            halting = ops.logical_and(failed, ops.logical_not(skipping))
        else:
            code, halting = NOT_FINITE, failed
        self.halt.assign(ops.where(halting, code, self.halt.value))
        for variable, value in ((self.halt_step, step + 1), (self.halt_loss, loss_sum), (self.halt_norm, norm),
                                (self.halt_lr, lr)):
            variable.assign(ops.where(halting, ops.cast(value, variable.dtype), variable.value))
