"""The one training loop every taa task uses.

A task supplies an iterator of batches and a ``compute_loss(model, batch)`` that
returns (summed loss, number of target tokens); the loop owns the optimizer
(Adam with the paper's betas and epsilon, §5.3), the schedule, gradient clipping,
seeding, the progress bar and the loss history.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from taa.config import TrainConfig
from taa.torch.training.losses import label_smoothed_cross_entropy
from taa.torch.training.progress import TrainingProgress
from taa.torch.training.schedules import schedule_from_config


@dataclass
class Seq2SeqBatch:
    """Teacher forcing: the decoder reads ``target_input`` and predicts ``target_output``."""

    source: Tensor  # (b, m)
    target_input: Tensor  # (b, n), starts with the start token
    target_output: Tensor  # (b, n), target_input shifted left by one


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    tokens_per_second: float
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, lr)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a CPU run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """Adam(beta1, beta2, eps) as in §5.3; AdamW when weight decay is set."""
    cls = torch.optim.AdamW if train.weight_decay > 0 else torch.optim.Adam
    return cls(
        model.parameters(),
        lr=train.lr,
        betas=(train.adam_beta1, train.adam_beta2),
        eps=train.adam_eps,
        weight_decay=train.weight_decay,
    )


def seq2seq_loss(smoothing: float, pad_id: int) -> Callable[[nn.Module, Seq2SeqBatch], tuple[Tensor, Tensor]]:
    """Label-smoothed cross-entropy of an encoder-decoder on a teacher-forced batch."""

    def compute_loss(model: nn.Module, batch: Seq2SeqBatch) -> tuple[Tensor, Tensor]:
        logits = model(batch.source, batch.target_input)  # (b, n, v)
        return label_smoothed_cross_entropy(logits, batch.target_output, smoothing, ignore_index=pad_id)

    return compute_loss


def fit(
    model: nn.Module,
    batches: Iterator[Any],
    train: TrainConfig,
    compute_loss: Callable[[nn.Module, Any], tuple[Tensor, Tensor]],
    *,
    d_model: int,
    progress: bool = True,
    on_step: Optional[Callable[[int, float], None]] = None,
) -> TrainResult:
    """Run ``train.steps`` optimizer steps; returns the loss history and throughput."""
    torch.set_num_threads(train.threads)
    optimizer = make_optimizer(model, train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_from_config(train, d_model))
    history: list[tuple[int, float, float]] = []
    total_tokens, started = 0, time.perf_counter()
    window_loss, window_tokens = 0.0, 0
    model.train()
    with TrainingProgress(train.steps, enabled=progress) as bar:
        for step in range(1, train.steps + 1):
            batch = next(batches)
            loss_sum, n_tokens = compute_loss(model, batch)
            loss = loss_sum / n_tokens.clamp(min=1)
            loss.backward()
            if train.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            tokens = int(n_tokens)
            total_tokens += tokens
            window_loss += float(loss_sum.detach())
            window_tokens += tokens
            if step % train.log_every == 0 or step == train.steps:
                mean_loss = window_loss / max(1, window_tokens)
                history.append((step, mean_loss, lr))
                elapsed = time.perf_counter() - started
                bar.update(step, loss=mean_loss, lr=lr, tokens_per_s=total_tokens / elapsed)
                window_loss, window_tokens = 0.0, 0
            if on_step is not None:
                on_step(step, float(loss.detach()))
    seconds = time.perf_counter() - started
    model.eval()
    return TrainResult(
        steps=train.steps,
        final_loss=history[-1][1] if history else float("nan"),
        seconds=seconds,
        tokens_per_second=total_tokens / seconds,
        history=history,
    )
