"""One training step, compiled once per batch shape: the gradient, clipping and the update on the device.

The Flax twin of what the torch :class:`~taa.torch.training.Trainer` does between two
batches (its ``_step``). The model is split into its graph (static: the structure, the
training mode) and its state -- the parameters, and everything else (the dropout streams'
keys and counts, constant tables) -- and the optimizer's state sits beside them; the step
is one pure function of these arrays and the step's batches, compiled by ``jax.jit``
(:class:`TrainStep`). It

1. adds up the gradients of the summed losses of ``train.grad_accumulation`` micro-batches
   and divides them by the number of target tokens of them all: the gradient of the mean
   loss per target token of the whole batch, as torch's ``backward`` of each summed loss;
   in bfloat16 (``train.dtype``) the forward and backward passes compute with the weights
   cast to bfloat16 while the weights, their gradients and the update stay float32
   (mixed precision, torch's autocast);
2. takes the gradient's global norm and clips it to ``train.grad_clip`` as
   ``torch.nn.utils.clip_grad_norm_`` does (the factor ``min(1, max_norm / (norm + 1e-6))``);
3. sets the rate the host computed (the schedule, the clock, the skipped steps) in the
   optimizer's state and updates the weights; the update is kept only when the loss and
   the gradient norm are finite (a select, no branch): otherwise the weights and the
   optimizer's state stay as they were (:mod:`taa.training.divergence`);
4. hands back the loss sum, the token count, the norm and whether the update was applied,
   which the host reads at once (as the torch trainer reads its loss after each step).

The parameters and the optimizer's state are donated to the step (their buffers are
reused for the new ones): between steps the trainer's own copies are the current ones, and
:meth:`TrainStep.write_to` puts them into the model object before anything reads it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from taa.config import TrainConfig
from taa.flax.training.adam import LEARNING_RATE
from taa.training.dtypes import BFLOAT16


def leaf_name(path: Sequence[Any]) -> str:
    """A state's leaf path (``jax.tree_util`` keys) as a dotted name: a weight's torch name
    (``decoder.layers.0.self_attention.q_proj.weight``), an optimizer moment's prefixed
    with where it sits in the optimizer's state (``inner_state.0.mu.<weight>``)."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            if key.name != "value":  # a Variable's array: the Variable's own name
                parts.append(key.name)
        else:  # a flattened index
            parts.append(str(getattr(key, "key", key)))
    return ".".join(parts)


def named_leaves(tree: Any) -> dict[str, Any]:
    """Every leaf of ``tree`` by its :func:`leaf_name`."""
    return {leaf_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def batch_fields(batch: Any) -> tuple[Callable[..., Any], dict[str, np.ndarray]]:
    """A task's batch (a dataclass of tensors or arrays, or a dict) -> (how to rebuild one
    from fields, its fields as numpy arrays; token ids as int32)."""
    if dataclasses.is_dataclass(batch):
        kind, fields = type(batch), {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    elif isinstance(batch, dict):
        kind, fields = dict, dict(batch)
    else:
        raise TypeError(f"a batch is a dataclass or a dict of arrays, not a {type(batch).__name__}")
    arrays = {}
    for name, value in fields.items():
        array = np.asarray(value)  # a torch tensor on the CPU, a numpy or JAX array
        arrays[name] = array.astype(np.int32) if array.dtype.kind in "iu" else array
    return kind, arrays


def computing_in(dtype: str) -> Callable[[Any], Any]:
    """The cast of a state's floating-point arrays to the number format ``dtype`` computes
    in (bfloat16: the weights as the matrix products read them); identity for float32."""
    if dtype != BFLOAT16:
        return lambda tree: tree

    def cast(tree: Any) -> Any:
        return jax.tree_util.tree_map(
            lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    return cast


def _as_before(new: Any, old: Any) -> Any:
    """``new`` with the dtypes of ``old`` (the state a bfloat16 forward pass leaves, made float32 again)."""
    return jax.tree_util.tree_map(
        lambda n, o: n.astype(o.dtype) if jnp.issubdtype(o.dtype, jnp.floating) else n, new, old)


class StepFigures(NamedTuple):
    """What one step reports to the host."""

    loss: float  # the summed loss of its batches
    tokens: int  # their target tokens
    grad_norm: float  # the gradient's global norm, before clipping
    applied: bool  # the update was kept (the loss and the norm are finite)


class TrainStep:
    """The model's graph and state, the optimizer's state, and the compiled step over them.

    ``model`` is put in training mode and split; the split holds the run's current weights
    from then on (:meth:`write_to` the model, :meth:`read_from` it after loading weights).
    ``compiles`` counts the compilations (one per shape of the step's batches);
    ``compile_seconds`` is the wall time of the steps that compiled (tracing, XLA's
    compilation and that step's run), ``first_compile_seconds`` that of the first one.
    """

    def __init__(self, model: nnx.Module, optimizer: optax.GradientTransformation,
                 compute_loss: Callable[[nnx.Module, Any], tuple[Any, Any]], train: TrainConfig) -> None:
        self.optimizer, self.compute_loss, self.train = optimizer, compute_loss, train
        self.cast = computing_in(train.dtype)
        model.train()
        self.graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
        self.opt_state = optimizer.init(self.params)
        self.compiles = 0
        self.compile_seconds = 0.0
        self.first_compile_seconds: float | None = None
        self.compiled = jax.jit(self._step, static_argnums=(4,), donate_argnums=(0, 2))

    def __call__(self, batches: Sequence[Any], lr: float) -> StepFigures:
        """One optimizer step over ``batches`` (``train.grad_accumulation`` of them) at rate ``lr``."""
        kinds, fields = zip(*(batch_fields(batch) for batch in batches))
        compiles, started = self.compiles, time.perf_counter()
        self.params, self.rest, self.opt_state, figures = self.compiled(
            self.params, self.rest, self.opt_state, tuple(fields), kinds[0], jnp.float32(lr))
        loss, tokens, norm, applied = jax.device_get(figures)  # the one wait for the device
        if self.compiles > compiles:  # this call traced and compiled a new shape
            seconds = time.perf_counter() - started
            self.compile_seconds += seconds
            if self.first_compile_seconds is None:
                self.first_compile_seconds = seconds
        return StepFigures(float(loss), int(tokens), float(norm), bool(applied))

    def write_to(self, model: nnx.Module) -> nnx.Module:
        """Put the current weights (and dropout streams) into ``model``."""
        nnx.update(model, self.params, self.rest)
        return model

    def read_from(self, model: nnx.Module) -> None:
        """Take the weights (and dropout streams) of ``model``, loaded from a file."""
        _, self.params, self.rest = nnx.split(model, nnx.Param, ...)

    def weights_are_finite(self) -> bool:
        """No weight holds an inf or a nan."""
        return all(bool(jnp.isfinite(p).all()) for p in jax.tree_util.tree_leaves(self.params))

    # ---------------------------------------------------------------- traced

    def _summed_loss(self, params: nnx.State, rest: nnx.State, batch: Any) -> tuple[jax.Array, tuple]:
        """The summed loss of one batch (float32) and (its token count, the state after it)."""
        # copy: Variables of this trace, which the dropout streams may advance
        model = nnx.merge(self.graphdef, self.cast(params), self.cast(rest), copy=True)
        loss_sum, count = self.compute_loss(model, batch)
        _, _, after = nnx.split(model, nnx.Param, ...)  # the dropout streams, advanced
        return loss_sum.astype(jnp.float32), (jnp.asarray(count, jnp.int32), _as_before(after, rest))

    def _step(self, params: nnx.State, rest: nnx.State, opt_state: Any, batches: tuple[dict, ...],
              kind: Callable[..., Any], lr: jax.Array):
        self.compiles += 1  # Python runs this body once per compilation (a trace)
        train = self.train
        gradients = jax.tree_util.tree_map(jnp.zeros_like, params)
        loss_total, count_total = jnp.float32(0.0), jnp.int32(0)
        for fields in batches:  # the micro-batches of one step, their gradients added up
            (loss_sum, (count, rest)), grads = jax.value_and_grad(self._summed_loss, has_aux=True)(
                params, rest, kind(**fields))
            gradients = jax.tree_util.tree_map(jnp.add, gradients, grads)
            loss_total, count_total = loss_total + loss_sum, count_total + count
        divisor = jnp.maximum(count_total, 1).astype(jnp.float32)  # the mean per target token of the whole batch
        gradients = jax.tree_util.tree_map(lambda g: g / divisor, gradients)
        norm = optax.tree.norm(gradients)  # before clipping
        if train.grad_clip:
            factor = jnp.minimum(1.0, train.grad_clip / (norm + 1e-6))
            gradients = jax.tree_util.tree_map(lambda g: g * factor, gradients)
        opt_state.hyperparams[LEARNING_RATE] = lr
        updates, updated_opt_state = self.optimizer.update(gradients, opt_state, params)
        updated = optax.apply_updates(params, updates)
        applied = jnp.isfinite(loss_total) & jnp.isfinite(norm)

        def keep(new: Any, old: Any) -> Any:  # a step that is not finite changes nothing
            return jax.tree_util.tree_map(lambda n, o: jnp.where(applied, n, o), new, old)

        return keep(updated, params), rest, keep(updated_opt_state, opt_state), (loss_total, count_total, norm, applied)
