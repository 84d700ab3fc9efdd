"""Training on several processes with ``torch.distributed``: one process per device.

``torchrun`` (or ``taa train --nproc N``, which launches it) starts N copies of ``taa train``
and tells each its place in environment variables: ``RANK`` (0 .. N-1 over every machine),
``WORLD_SIZE`` (N), ``LOCAL_RANK`` (its index on its machine) and where rank 0 listens
(``MASTER_ADDR``, ``MASTER_PORT``). :func:`setup` joins the process group (``env://``):
gloo on CPUs, NCCL on GPUs, each process on its own GPU (``cuda:LOCAL_RANK``).

The recipe means the same thing on any number of processes: ``train.batch_size`` (and the
translation token budget) is the *global* batch. Every process draws the same batches from
the same seeded stream and computes only its own share of each (:meth:`Parallel.share`:
rank r takes the r-th of N nearly equal slices of the rows). The loss is a sum over target
tokens, so the gradient of the whole batch is the sum of the shares' gradients divided by
the batch's token count: the processes add their gradients (the all-reduce of
DistributedDataParallel, which averages, is scaled back to a sum), add their loss sums and
token counts (:meth:`Parallel.sum`), and every process then takes the same step. One
recipe gives the same model on 1 or N processes, up to the order of float additions.

Two ways to hold the model (``train.parallel``):

- ``ddp`` (Li et al. 2020, DistributedDataParallel): every process holds the whole model
  and optimizer; gradients are all-reduced in buckets while the backward pass runs.
- ``fsdp`` (Zhao et al. 2023; FSDP2's ``fully_shard``): every weight, its gradient and its
  optimizer moments are split in N shards along their first dimension, one per process;
  each layer's weights are gathered just before its forward and backward and freed after.
  The run keeps one whole copy of the weights on the CPU (:attr:`Parallel.whole`), filled
  from the shards before a validation or a save (:meth:`Parallel.gather`), so rank 0
  evaluates and writes checkpoints in the one safetensors format, and a state saved by
  any number of processes resumes on any other.

Rank 0 alone validates, writes states, best weights and the final model, tracks and shows
the progress bar; it tells the others the validation figures (:meth:`Parallel.broadcast`)
so every process takes the same decisions (best weights, early stopping). A process that
dies ends the run: torchrun stops the others at once and reports the failure, and the last
state written stays resumable.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from typing import Any, Callable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from taa.config import ConfigError, TrainConfig
from taa.torch.devices import cuda_count, local_rank, map_tensors, resolve_device
from taa.training.launch import process_count

# How long a process waits for the others at a collective before giving up. Validation and
# the saves happen on rank 0 while the others wait, so this bounds them too.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


class Parallel:
    """One process: every method does what a single process needs (nothing, mostly).
    :class:`DistributedParallel` is the same interface over a process group."""

    world_size = 1
    rank = 0
    kind = "single"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.whole: Optional[nn.Module] = None  # the model the trainer evaluates and saves

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that evaluates, writes, tracks and shows progress."""
        return self.rank == 0

    def wrap(self, model: nn.Module, unused: Optional[Callable[[nn.Module], set[str]]] = None) -> nn.Module:
        """The module the training steps call; the model itself on one process. ``unused(model)``
        names the weights a training step leaves without a gradient (None: unknown)."""
        self.whole = model
        return model

    def share(self, batch: Any) -> tuple[Any, bool]:
        """This process's rows of ``batch`` and whether it has any (always, on one process)."""
        return batch, True

    def no_sync(self, wrapped: nn.Module, last: bool):
        """Gradient accumulation: no all-reduce until the last micro-batch of a step."""
        return nullcontext()

    def sum(self, *values: float) -> list[float]:
        """Each value added over the processes."""
        return list(values)

    def gradient_scale(self) -> float:
        """What the gradients are multiplied by so they are the sum over the processes."""
        return 1.0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (a Python object)."""
        return value

    def barrier(self) -> None:
        """Wait until every process got here."""

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process."""
        return flag

    def gather(self, wrapped: nn.Module) -> nn.Module:
        """The whole model with the weights the training has reached (collective under fsdp)."""
        return self.whole if self.whole is not None else wrapped

    def scatter(self, wrapped: nn.Module) -> None:
        """After weights were loaded into the whole model: the same weights into the trained one."""

    @contextmanager
    def evaluating(self, wrapped: nn.Module) -> Iterator[nn.Module]:
        """The whole model with the training's weights, on the run's device, for a validation."""
        yield self.gather(wrapped)

    def finish(self, wrapped: nn.Module) -> nn.Module:
        """The whole model once training is over, on the run's device."""
        return self.gather(wrapped)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer's state dict with whole tensors (collective under fsdp)."""
        return optimizer.state_dict()

    def shard_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """After a whole optimizer state was loaded: each moment cut to this process's shard."""

    def close(self) -> None:
        """Leave the process group (nothing to leave on one process)."""

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 goes first (a download, a cache), the others once it is done."""
        yield


class DistributedParallel(Parallel):
    """A process of a torch.distributed group (see the module docstring)."""

    def __init__(self, device: torch.device, kind: str) -> None:
        super().__init__(device)
        self.kind = kind
        self.world_size, self.rank = dist.get_world_size(), dist.get_rank()

    # ---------------------------------------------------------------- the model

    def wrap(self, model: nn.Module, unused: Optional[Callable[[nn.Module], set[str]]] = None) -> nn.Module:
        """DistributedDataParallel around ``model``, or a sharded copy of it (fsdp).

        Rank 0's initial weights go to every process first, so they start equal however
        each process's random generators were used before. Some models hold weights a
        task's loss never reaches (BERT's pooler under a classifier that pools the mean):
        DDP would wait for their gradients for ever, unless told to look for them after
        every step, a walk over the autograd graph that costs time; ``unused(model)`` (a
        trial step, :meth:`Trainer.unused_weights`) says whether there are any, on any process."""
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0)
        if self.kind == "ddp":
            self.whole = model
            names = unused(model) if unused is not None else None
            gathered: list[Optional[set[str]]] = [None] * self.world_size
            dist.all_gather_object(gathered, names)
            look = any(found is None or found for found in gathered)
            # No buffer sync in forward: taa's buffers (position tables) never change, and
            # rank 0 validates alone, which a sync in forward would wait on for ever.
            # (static_graph would find unused weights once, but it breaks no_sync.)
            return nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                forward_sync_buffers=False, find_unused_parameters=look)
        from torch.distributed.fsdp import fully_shard

        sharded = copy.deepcopy(model)
        self.whole = model.to("cpu")  # the whole copy: validation and checkpoints, on the CPU
        for layer in _layers(sharded):  # each layer gathered and freed on its own ...
            fully_shard(layer)
        fully_shard(sharded)  # ... and what is left (embeddings, head) by the root
        return sharded

    def share(self, batch: Any) -> tuple[Any, bool]:
        """Rank r's slice of the rows of every tensor in ``batch`` (a tensor, a dataclass,
        a tuple or a dict of them): N nearly equal slices, in order. A batch with fewer rows
        than processes leaves some without any: they compute on row 0 and count nothing
        (the second value is False), so that every process joins every all-reduce."""
        rows = _rows(batch)
        if rows is None:
            raise ConfigError(f"a batch of {type(batch).__name__} has no tensor to split across processes")
        start, stop = _slice(rows, self.world_size, self.rank)
        if start == stop:
            return _take(batch, 0, 1), False
        return _take(batch, start, stop), True

    def no_sync(self, wrapped: nn.Module, last: bool):
        if last:
            return nullcontext()
        if self.kind == "ddp":
            return wrapped.no_sync()
        wrapped.set_requires_gradient_sync(False)  # FSDP2: reduce-scatter once, at the last micro-batch
        return _resync(wrapped)

    def sum(self, *values: float) -> list[float]:
        totals = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(totals)
        return totals.tolist()

    def gradient_scale(self) -> float:
        return float(self.world_size)  # both wrappers average the gradients: back to their sum

    def broadcast(self, value: Any) -> Any:
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        return self.sum(1.0 if flag else 0.0)[0] > 0

    @contextmanager
    def main_first(self) -> Iterator[None]:
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    # ---------------------------------------------------------------- fsdp: whole <-> shards

    @torch.no_grad()
    def gather(self, wrapped: nn.Module) -> nn.Module:
        if self.kind == "ddp":
            return self.whole
        whole = dict(self.whole.named_parameters())
        for name, parameter in wrapped.named_parameters():  # every process, in the same order
            full = parameter.full_tensor() if hasattr(parameter, "full_tensor") else parameter
            whole[name].copy_(full.to("cpu"))
        return self.whole

    @torch.no_grad()
    def scatter(self, wrapped: nn.Module) -> None:
        if self.kind == "ddp":
            return
        from torch.distributed.tensor import distribute_tensor

        whole = dict(self.whole.named_parameters())
        for name, parameter in wrapped.named_parameters():
            value = whole[name].to(parameter.device)
            if hasattr(parameter, "device_mesh"):  # every process holds the whole: cut its own shard
                value = distribute_tensor(value, parameter.device_mesh, parameter.placements, src_data_rank=None)
            parameter.copy_(value)

    @contextmanager
    def evaluating(self, wrapped: nn.Module) -> Iterator[nn.Module]:
        whole = self.gather(wrapped)
        if self.kind == "ddp" or not self.is_main:
            yield whole
            return
        whole.to(self.device)  # rank 0 validates on the run's device, then frees it
        try:
            yield whole
        finally:
            whole.to("cpu")

    def finish(self, wrapped: nn.Module) -> nn.Module:
        whole = self.gather(wrapped)
        return whole.to(self.device) if self.is_main else whole

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        state = optimizer.state_dict()
        if self.kind == "ddp":
            return state
        whole = {}
        for index, values in sorted(state["state"].items()):  # the same order on every process
            whole[index] = {name: value.full_tensor() if hasattr(value, "full_tensor") else value
                            for name, value in sorted(values.items())}
        return {"state": whole, "param_groups": state["param_groups"]}

    @torch.no_grad()
    def shard_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        if self.kind == "ddp":
            return
        from torch.distributed.tensor import distribute_tensor

        for group in optimizer.param_groups:
            for parameter in group["params"]:
                if not hasattr(parameter, "device_mesh"):
                    continue
                values = optimizer.state.get(parameter, {})
                for name, value in values.items():
                    if isinstance(value, Tensor) and value.dim() and not hasattr(value, "device_mesh"):
                        values[name] = distribute_tensor(value.to(parameter.device), parameter.device_mesh,
                                                         parameter.placements, src_data_rank=None)


@contextmanager
def _resync(wrapped: nn.Module) -> Iterator[None]:
    try:
        yield
    finally:
        wrapped.set_requires_gradient_sync(True)


def _layers(model: nn.Module) -> list[nn.Module]:
    """The layers of every stack in ``model`` (the children of each ``layers`` list):
    FSDP's units, gathered one at a time."""
    return [layer for name, module in model.named_modules()
            if name.split(".")[-1] == "layers" and isinstance(module, nn.ModuleList) for layer in module]


def _rows(batch: Any) -> Optional[int]:
    """The number of rows of the first tensor in ``batch``."""
    rows: list[int] = []
    map_tensors(batch, lambda tensor: rows.append(tensor.shape[0]))
    return rows[0] if rows else None


def _take(batch: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of every tensor in ``batch``; everything else as it is."""
    return map_tensors(batch, lambda tensor: tensor[start:stop])


def _slice(rows: int, parts: int, index: int) -> tuple[int, int]:
    """The ``index``-th of ``parts`` contiguous slices of ``rows`` rows, sizes differing by one at most."""
    size, extra = divmod(rows, parts)
    start = index * size + min(index, extra)
    return start, start + size + (1 if index < extra else 0)


def setup(train: TrainConfig) -> Parallel:
    """The device this process computes on (``train.device``) and its place among the
    processes: a :class:`DistributedParallel` that has joined the group when torchrun
    started several, else a :class:`Parallel` of one."""
    device = resolve_device(train.device, "train.device")
    if process_count() == 1:
        return Parallel(device)
    if not dist.is_available():
        raise ConfigError("this torch has no torch.distributed: train on one process")
    if device.type not in ("cuda", "cpu"):
        raise ConfigError(f"train.device={train.device}: several processes train on CPUs (gloo) or CUDA GPUs "
                          f"(nccl), not on {device.type}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method="env://", timeout=COLLECTIVE_TIMEOUT,
                                **({"device_id": device} if device.type == "cuda" else {}))
    return DistributedParallel(device, train.parallel)


def join() -> None:
    """Join the group of processes torchrun started this one in, before the recipe is read:
    a process that then fails on its own (a state folder another machine lacks) leaves a
    group whose other members notice at their next collective, instead of waiting for it
    to join (:data:`COLLECTIVE_TIMEOUT`). CPUs talk through gloo, GPUs through NCCL: the
    group serves both, whichever ``train.device`` the recipe names. Nothing on one process."""
    if process_count() == 1 or not dist.is_available() or dist.is_initialized():
        return
    gpus, index = cuda_count(), local_rank()
    if gpus and index is not None and index < gpus:
        torch.cuda.set_device(index)
    backend = "cpu:gloo,cuda:nccl" if gpus else "gloo"
    dist.init_process_group(backend, init_method="env://", timeout=COLLECTIVE_TIMEOUT)
