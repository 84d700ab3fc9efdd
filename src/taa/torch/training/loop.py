"""The one training loop every taa task uses.

A task supplies a stream of batches and a ``compute_loss(model, batch)`` returning
(summed loss, number of target tokens); optionally an ``evaluate(model)`` returning
validation metrics. The :class:`Trainer` owns everything else: Adam with the paper's
betas and epsilon (§5.3), the learning-rate schedule (by step, or by time within a
``max_minutes`` budget), gradient accumulation and
clipping, bfloat16 autocast, validation, early stopping, the best-k checkpoints and
their average (§6.1), resumable state, tracking, and the progress bar. A run ends for
one of :data:`STOP_REASONS`: its steps are done, its time budget is spent, or the
validation metric stopped improving.

A step whose loss or gradient norm is not finite is never applied: ``train.nonfinite``
stops the run with a :class:`~taa.training.divergence.DivergenceError` or skips the step
(:mod:`taa.training.divergence`). The weights are checked again before each save, so no
file the run writes ever holds an inf or a nan; nor does the state's JSON: an interval
whose steps were all skipped has no training loss (None), and a validation figure that is
not finite is kept as None.

Resuming is exact: the state folder holds the weights, the optimizer moments, the
schedule position, every random generator and the batch stream's position, so a run
killed at any moment and resumed from its last state ends with the same weights as
a run never interrupted. The state is written before the best weights it no longer lists
are deleted, so it never names a file that is gone; what a kill leaves behind (temporary
files, staging folders, best weights no state lists) is removed when the run starts again
(:func:`taa.folders.clean_run_folder`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from taa import folders
from taa.config import TrainConfig
from taa.torch.training import checkpoint as ckpt
from taa.torch.devices import to_device
from taa.torch.training.distributed import Parallel
from taa.torch.training.losses import label_smoothed_cross_entropy
from taa.torch.training.muon import Muon
from taa.training.batches import BatchStream  # re-exported: its home is framework-neutral
from taa.training.divergence import (
    SKIP, WEIGHTS_NOT_FINITE, LastState, diverged, skip_or_stop, what_is_not_finite,
)
from taa.training.dtypes import BFLOAT16
from taa.training.progress import TrainingProgress
from taa.training.results import IN_A_LAYER, TIME_BUDGET, TrainerState, TrainResult, is_hidden_matrix
from taa.training.results import ranks_among_the_best, record_interval, record_validation, report_skip, scheduled_rate
from taa.training.results import train_result
from taa.training.results import STOP_REASONS  # noqa: F401 (why a run ends, under the trainer's name)
from taa.training.schedules import schedule_from_config
from taa.training.state import check_best_weights, host_random_state, read_trainer_state, restore_host_random_state
from taa.training.state import restore_trainer_state
from taa.tracking import Tracker


@dataclass
class Seq2SeqBatch:
    """Teacher forcing: the decoder reads ``target_input`` and predicts ``target_output``."""

    source: Tensor  # (b, m)
    target_input: Tensor  # (b, n), starts with the start token
    target_output: Tensor  # (b, n), target_input shifted left by one


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a CPU run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def count_parameters(model: nn.Module) -> int:
    """The model's number of weights (the ``parameters`` metric)."""
    return sum(p.numel() for p in model.parameters())


def make_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """Adam(beta1, beta2, eps) as in §5.3; AdamW when weight decay is set; or Muon.

    Decoupled weight decay (Loshchilov & Hutter 2019) shrinks only the matrices (linear
    maps and embeddings): biases and norm gains stay free, as in BERT and GPT-2 training.
    With ``train.layer_lr_decay`` < 1 every group also carries an ``lr_scale`` by depth
    (:func:`layer_depths`); the trainer multiplies the scheduled rate by it.
    ``train.optimizer: muon`` updates the matrices inside the layers with :class:`Muon`
    (:func:`is_hidden_matrix`) and everything else with AdamW, at the same rate.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    # PyTorch's fused kernel updates every tensor in one pass. Measured on a 2-core CPU
    # (torch 2.13): 1.6 vs 7.2 ms a step for 0.8M parameters, 10 vs 50 ms for 10.7M, where
    # the default on a CPU is a Python loop over the tensors. Same update, same state.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for _, p in named)
    hyper = dict(lr=train.lr, betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_eps, fused=fused or None)
    depth = layer_depths([name for name, _ in named]) if train.layer_lr_decay < 1 else {}
    top = max(depth.values(), default=0)
    muon = train.optimizer == "muon"
    groups: dict[tuple[int, bool, bool], list[Tensor]] = {}
    for name, p in named:
        decays = train.weight_decay > 0 and p.dim() >= 2
        groups.setdefault((depth.get(name, top), decays, muon and is_hidden_matrix(name, tuple(p.shape))), []).append(p)
    param_groups = [
        {
            "params": params,
            "weight_decay": train.weight_decay if decays else 0.0,
            **({"muon": hidden} if muon else {}),
            **({"lr_scale": train.layer_lr_decay ** (top - level)} if depth else {}),
        }
        for (level, decays, hidden), params in sorted(
            groups.items(), key=lambda item: (item[0][0], not item[0][1], not item[0][2])
        )
    ]
    if muon:
        return Muon(param_groups, momentum=train.muon_momentum, **hyper)
    kind = torch.optim.AdamW if train.weight_decay > 0 else torch.optim.Adam
    return kind(param_groups, **hyper)


def layer_depths(names: list[str]) -> dict[str, int]:
    """Depth of each parameter for layer-wise learning-rate decay (Clark et al. 2020, ELECTRA
    §A; Howard & Ruder 2018's "discriminative fine-tuning"): 0 for the embeddings, i + 1 for
    ``layers.i``, and L + 1 for everything above the L layers (final norm, pooler, heads).
    A layer ``d`` below the top learns at ``layer_lr_decay ** d`` of the rate.

    Depth only makes sense in one stack of layers: an encoder-decoder is an error.
    """
    stacks, depth = set(), {}
    for name in names:
        found = IN_A_LAYER.search(name)
        if found:
            stacks.add(name[: found.start()])
            depth[name] = int(found.group(2)) + 1
        elif "embed" in name:
            depth[name] = 0
    if len(stacks) > 1:
        raise ValueError(f"layer_lr_decay needs one stack of layers; this model has {len(stacks)}: {sorted(stacks)}")
    top = max(depth.values(), default=0) + 1
    return {name: depth.get(name, top) for name in names}


def seq2seq_loss(smoothing: float, pad_id: int) -> Callable[[nn.Module, Seq2SeqBatch], tuple[Tensor, Tensor]]:
    """Label-smoothed cross-entropy of an encoder-decoder on a teacher-forced batch."""

    def compute_loss(model: nn.Module, batch: Seq2SeqBatch) -> tuple[Tensor, Tensor]:
        logits = model(batch.source, batch.target_input)  # (b, n, v)
        return label_smoothed_cross_entropy(logits, batch.target_output, smoothing, ignore_index=pad_id)

    return compute_loss


def autocast(dtype: str, device: torch.device):
    """bfloat16 autocast for "bfloat16"; a no-op context for "float32"."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == BFLOAT16)


class Trainer:
    """Trains ``model`` for ``train.steps`` optimizer steps; see the module docstring.

    ``out`` is the run folder: ``state/`` (resumable), ``best/step-N.safetensors`` (the
    kept best weights) and, at the end, the final ``model.safetensors``. ``write_extra``
    adds task files (e.g. the tokenizer) to every state folder. ``rate_unit`` names what
    ``compute_loss`` counts, for the progress bar: "tok" (tokens) or "sent" (sentences).
    ``progress`` is on or off, or the :class:`TrainingProgress` of a whole run (whose
    phases, such as validation, show on the same bar).

    ``parallel`` places the run: the device and, under torchrun, this process's place among
    several (:mod:`taa.torch.training.distributed`); by default one process on the model's
    device. The model moves to that device; each batch moves there as it is used. On
    several processes ``model`` is the whole model the run evaluates and saves, and the
    steps run through ``parallel.wrap(model)`` (DistributedDataParallel or FSDP2); rank 0
    alone validates and writes into ``out``.
    """

    def __init__(
        self,
        model: nn.Module,
        train: TrainConfig,
        compute_loss: Callable[[nn.Module, Any], tuple[Tensor, Tensor]],
        batches: Iterator[Any],
        *,
        d_model: int,
        evaluate: Optional[Callable[[nn.Module], dict[str, float]]] = None,
        out: Optional[str | Path] = None,
        write_extra: Optional[Callable[[Path], None]] = None,
        tracker: Optional[Tracker] = None,
        progress: bool | TrainingProgress = True,
        rate_unit: str = "tok",
        parallel: Optional[Parallel] = None,
    ) -> None:
        self.train, self.compute_loss, self.batches = train, compute_loss, batches
        self.evaluate, self.write_extra = evaluate, write_extra
        self.out = Path(out) if out is not None else None
        self.tracker = tracker or Tracker()
        self.progress, self.rate_unit = progress, rate_unit
        self.parallel = parallel or Parallel(next(model.parameters()).device)
        self.device = self.parallel.device
        self.wrapped = self.parallel.wrap(model.to(self.device), self.unused_weights)  # what the steps call
        self.model = self.parallel.whole  # the whole model: validated, saved, handed back
        self.optimizer = make_optimizer(self.wrapped, train)
        self.schedule = schedule_from_config(train, d_model)  # multiplier of train.lr at a step
        self.state = TrainerState()
        self.resumed_from: Optional[Path] = None  # the run folder whose state load_state read
        self.last_state: Optional[tuple[Path, int]] = None  # the newest state on disk: (folder, step)
        self.updated_since_state = False  # an update was applied after the newest state was saved or loaded
        self.dropped_best: list[int] = []  # steps whose best weights go once a saved state no longer lists them
        self.lr: Optional[float] = None  # the rate of the last step taken

    def learning_rate(self) -> float:
        """The rate for the next step: the schedule at the step, or at the clock's position
        within ``max_minutes``, lowered for each skipped step (:func:`~taa.training.results.scheduled_rate`)."""
        return scheduled_rate(self.train, self.state, self.schedule)

    # ---------------------------------------------------------------- one step

    def unused_weights(self, model: nn.Module) -> Optional[set[str]]:
        """The weights a training step leaves without a gradient, from a trial step on this
        process's share of the first batch that changes nothing: the batch stream is put back
        where it was, the random generators too, and the gradients are dropped. None when the
        stream cannot be put back."""
        if not hasattr(self.batches, "state_dict"):
            return None
        position = self.batches.state_dict()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            share, _ = self.parallel.share(next(self.batches))
            model.train()
            with autocast(self.train.dtype, self.device):
                loss, _ = self.compute_loss(model, to_device(share, self.device))
            loss.backward()
        self.batches.load_state_dict(position)
        names = {name for name, p in model.named_parameters() if p.requires_grad and p.grad is None}
        model.zero_grad(set_to_none=True)
        return names

    def _step(self) -> tuple[float, int, float, str]:
        """One optimizer step over ``grad_accumulation`` batches: (loss sum, tokens, lr,
        what was not finite). The update is applied only when the loss and the gradient norm
        are finite; otherwise the step is skipped (what was not finite is returned, the
        weights and the optimizer untouched) or the run stops (:meth:`_skip_or_stop`)."""
        model, parallel = self.wrapped, self.parallel
        model.train()
        loss_total, token_total = 0.0, 0
        accumulation = self.train.grad_accumulation
        for micro in range(accumulation):
            # Every process draws the same batch and computes its own rows of it.
            share, counts = parallel.share(next(self.batches))
            with parallel.no_sync(model, last=micro == accumulation - 1):
                with autocast(self.train.dtype, self.device):
                    loss_sum, n_tokens = self.compute_loss(model, to_device(share, self.device))
                if not counts:  # rows lent to a process with none of its own: computed, not counted
                    loss_sum, n_tokens = loss_sum * 0.0, 0
                loss_sum.backward()  # summed, so micro-batches add up token by token
            loss_total += float(loss_sum.detach())
            token_total += int(n_tokens)
        if parallel.world_size > 1:  # the whole batch's loss and tokens, the same on every process
            loss_total, tokens = parallel.sum(loss_total, token_total)
            token_total = int(tokens)
        # The gradient of the mean loss per target token of the whole batch (the wrappers
        # average the processes' gradients: gradient_scale makes it their sum again).
        divisor = max(1, token_total) / parallel.gradient_scale()
        for parameter in model.parameters():
            if parameter.grad is not None:
                parameter.grad.div_(divisor)
        # The norm before clipping. Without clipping (grad_clip 0) only the norm: the same
        # number, without multiplying every gradient by 1.
        if self.train.grad_clip:
            grad_norm = _number(nn.utils.clip_grad_norm_(model.parameters(), self.train.grad_clip))
        else:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            grad_norm = _number(nn.utils.get_total_norm(grads))
        lr = self.lr = self.learning_rate()
        problem = what_is_not_finite(loss_total, grad_norm)
        if problem:
            self.optimizer.zero_grad(set_to_none=True)
            self._skip_or_stop(problem, lr)
            return loss_total, token_total, lr, problem
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.optimizer.step()
        self.updated_since_state = True
        self.optimizer.zero_grad(set_to_none=True)
        return loss_total, token_total, lr, ""

    # ---------------------------------------------------------------- non-finite numbers

    def _skip_or_stop(self, problem: str, lr: float) -> None:
        """A step whose loss or gradient is not finite: record it as skipped, or raise a
        DivergenceError (``train.nonfinite``). Weights that are no longer finite (an update
        that overflowed) stop the run whatever the policy: skipping cannot mend them."""
        step = self.state.step + 1
        if self.train.nonfinite == SKIP and not self.weights_are_finite():
            raise diverged(step, WEIGHTS_NOT_FINITE, lr, self._last_state())
        skip_or_stop(self.train, step, problem, lr, self.state.skipped_steps, self._last_state())
        self.state.skipped_steps.append(step)

    def weights_are_finite(self) -> bool:
        """No parameter holds an inf or a nan (on any process: a collective on several)."""
        here = _all_finite(_local(p) for p in self.wrapped.parameters())
        return not self.parallel.any(not here) if self.parallel.world_size > 1 else here

    def _check_weights(self, model: Optional[nn.Module] = None) -> None:
        """The last guard before weights are written or handed back: finite, or a DivergenceError.
        ``model``: that whole model, on this process alone; else the trained weights, on every
        process (a collective on several)."""
        finite = _all_finite(model.parameters()) if model is not None else self.weights_are_finite()
        if not finite:
            lr = self.lr if self.lr is not None else self.learning_rate()
            raise diverged(self.state.step, WEIGHTS_NOT_FINITE, lr, self._last_state())

    def _last_state(self) -> Optional[LastState]:
        """Where the run can resume from, for a DivergenceError; None without a run folder."""
        if self.last_state is not None:
            return LastState(str(self.last_state[0]), self.last_state[1], unchanged_since=not self.updated_since_state)
        return LastState(str(self.out / folders.STATE)) if self.out is not None else None

    # ---------------------------------------------------------------- the run

    def fit(self) -> TrainResult:
        train, state = self.train, self.state
        if train.threads is not None:  # None: the framework's own choice
            torch.set_num_threads(train.threads)
        started = time.perf_counter() - state.seconds
        window_loss, window_tokens = 0.0, 0
        bar = self.progress
        if not isinstance(bar, TrainingProgress):
            bar = TrainingProgress(train.steps, enabled=bar, unit=self.rate_unit)
        main = self.parallel.is_main
        self.parallel.barrier()  # every process has read what it resumes from before rank 0 cleans
        if self.out is not None and main:  # what a killed run left behind; a resumed run's state says which best stay
            resumed_here = self.resumed_from is not None and self.resumed_from.resolve() == self.out.resolve()
            folders.clean_run_folder(self.out, [step for _, step in state.best] if resumed_here else None)
            if resumed_here:
                self.last_state = (self.out / folders.STATE, state.step)  # where clean_run_folder settled it
        if self.parallel.rank:  # dropout draws other masks on each process, from a seed of the run's and the step
            torch.manual_seed(train.seed + DROPOUT_SEED_STRIDE * self.parallel.rank + state.step)
        with bar:
            bar.update(state.step)
            while state.step < train.steps and not state.stop_reason:
                loss_sum, tokens, lr, skipped = self._step()
                state.step += 1
                state.tokens += tokens
                if skipped:
                    self._report_skip(skipped, bar)
                else:
                    window_loss += loss_sum
                    window_tokens += tokens
                state.seconds = time.perf_counter() - started
                if train.max_minutes > 0 and self.parallel.world_size > 1:  # rank 0's clock decides for all
                    state.seconds = self.parallel.sum(state.seconds if main else 0.0)[0]
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
                    self.save_state(self.out / folders.STATE)  # every process: gathering the shards is collective
                    if main:
                        self._remove_dropped_best()
        return self.finish()

    def _report_skip(self, problem: str, bar: TrainingProgress) -> None:
        """A skipped step goes to the tracker (the number skipped so far) and, as a line, to the bar."""
        skipped = report_skip(bar, self.train, self.state, self.state.step, problem, self.learning_rate())
        self.tracker.log_metrics(skipped, self.state.step)

    def _remove_dropped_best(self) -> None:
        """Delete the best weights that fell out of the ranking, now that the saved state no
        longer lists them. In this order a kill leaves at worst a file no state lists (removed
        at the next start), never a state that lists a file that is gone."""
        for step in self.dropped_best:
            folders.best_weights(self.out, step).unlink(missing_ok=True)
        self.dropped_best = []

    def _validate(self) -> None:
        """Evaluate, track, keep the best k weights, count evaluations without improvement.

        A metric that is not finite never ranks among the best. The weights that fall out of
        the ranking are deleted only after the next saved state (:meth:`_remove_dropped_best`).
        """
        state, train = self.state, self.train
        with self.parallel.evaluating(self.wrapped) as model:  # the whole model (gathered under fsdp)
            metrics = self.evaluate(model) if self.parallel.is_main else None
            self.wrapped.train()
            metrics = self.parallel.broadcast(metrics)  # every process decides alike
            if self.out is not None and self.parallel.is_main:
                self._keep_best(metrics)
        self.tracker.log_metrics(metrics, state.step)
        dropped = record_validation(state, train, metrics)  # may decide on early stopping
        if self.out is not None:
            self.dropped_best += dropped

    def _keep_best(self, metrics: dict[str, float]) -> None:
        """Rank 0, with the whole model at hand: write this step's weights if they rank among the best."""
        if ranks_among_the_best(self.state, self.train, metrics):
            self._check_weights(self.model)
            ckpt.save_weights(self.model, folders.best_weights(self.out, self.state.step))

    def finish(self) -> TrainResult:
        """Load the best (or the average of the best k) weights, if any were kept."""
        state = self.state
        self.model = self.parallel.finish(self.wrapped)  # the whole model, on the run's device
        if self.out is not None and state.best:  # the same on every process
            if self.parallel.is_main:  # the model it hands back: the best weights
                paths = [folders.best_weights(self.out, step) for _, step in state.best]
                if self.train.average_best:
                    ckpt.load_average(self.model, paths)
                else:
                    ckpt.load_weights_file(self.model, paths[0])
                self._check_weights(self.model)
        else:
            self._check_weights()
        self.model.eval()
        return train_result(state)

    # ---------------------------------------------------------------- resumable state

    def save_state(self, directory: Path) -> None:
        """Write everything a resumed run needs, atomically (a kill keeps the previous state).
        Weights that are not finite are never written: a DivergenceError instead.

        Every process calls it (gathering a sharded model and its optimizer is collective);
        rank 0 writes. The files hold whole tensors on the CPU, so the state resumes on any
        device and any number of processes."""
        self._check_weights()
        whole = self.parallel.gather(self.wrapped)
        optimizer = self.parallel.optimizer_state(self.optimizer)
        if not self.parallel.is_main:
            self.last_state, self.updated_since_state = (Path(directory), self.state.step), False
            return

        def write(staging: Path) -> None:
            ckpt.save_weights(whole, staging / folders.WEIGHTS)
            ckpt.save_optimizer(self.optimizer, staging, state=optimizer)
            trainer = {"trainer": asdict(self.state), **host_random_state(self.batches)}
            (staging / folders.TRAINER_STATE).write_text(folders.strict_json(trainer))
            generators = {ckpt.TORCH_RNG: torch.get_rng_state()}
            if self.device.type == "cuda":  # dropout on a GPU draws from the GPU's generator
                generators[ckpt.CUDA_RNG] = torch.cuda.get_rng_state(self.device)
            ckpt.save_tensors(generators, staging / folders.RANDOM_STATE)
            if self.write_extra is not None:
                self.write_extra(staging)

        folders.write_folder_atomically(directory, write)
        self.last_state, self.updated_since_state = (Path(directory), self.state.step), False

    def load_state(self, directory: Path) -> None:
        """Continue from a state folder written by :meth:`save_state`.

        Every file is checked as it is read, each problem one CheckpointError naming the
        file and the field (:mod:`taa.torch.training.checkpoint`), and before any training.
        Every best weights file the state lists must be in the run folder's ``best/`` and
        sound: the run ends with them.
        """
        directory = folders.find_state_folder(directory)
        ckpt.load_weights_file(self.model, directory / folders.WEIGHTS)  # the whole model, checked
        self.parallel.scatter(self.wrapped)  # fsdp: each process takes its shards of it
        ckpt.load_optimizer(self.optimizer, directory)
        self.parallel.shard_optimizer_state(self.optimizer)
        saved = read_trainer_state(directory / folders.TRAINER_STATE, TrainerState)  # checked, naming the file
        torch_rng, cuda_rng = ckpt.read_torch_rng(directory / folders.RANDOM_STATE)
        self.state = restore_trainer_state(saved["trainer"], self.train)
        check_best_weights(directory, self.state, ckpt.load_tensors)
        self.resumed_from, self.last_state = directory.parent, (directory, self.state.step)
        self.updated_since_state = False
        restore_host_random_state(saved, self.batches)
        torch.set_rng_state(torch_rng)
        if cuda_rng is not None and self.device.type == "cuda":  # a state saved on a CPU leaves the GPU's as seeded
            torch.cuda.set_rng_state(cuda_rng, self.device)


# Process r > 0 of a run on several seeds its generator (dropout) with seed + r * this + step.
DROPOUT_SEED_STRIDE = 1_000_003


def _local(tensor: Tensor) -> Tensor:
    """This process's part of a sharded tensor (a DTensor under fsdp); a plain tensor as it is."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _number(norm: Tensor) -> float:
    """A gradient norm as a float (a DTensor's, under fsdp, is first completed across processes)."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


@torch.no_grad()
def _all_finite(tensors: Iterable[Tensor]) -> bool:
    """No tensor holds an inf or a nan."""
    finite = [torch.isfinite(t).all() for t in tensors if t.numel()]
    return bool(torch.stack(finite).all()) if finite else True


def fit(
    model: nn.Module,
    batches: Iterator[Any],
    train: TrainConfig,
    compute_loss: Callable[[nn.Module, Any], tuple[Tensor, Tensor]],
    *,
    d_model: int,
    progress: bool = True,
    evaluate: Optional[Callable[[nn.Module], dict[str, float]]] = None,
) -> TrainResult:
    """Train without a run folder (no checkpoints): the shortest way to use the loop."""
    trainer = Trainer(model, train, compute_loss, batches, d_model=d_model, evaluate=evaluate, progress=progress)
    return trainer.fit()
