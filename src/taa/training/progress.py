"""A live progress bar for training: step, loss, learning rate, tokens/s and ETA.

The rate counts what the loss is averaged over: tokens for language and translation,
sentences for a classifier (``unit="sent"``).

When the output is not a terminal (a log file, CI), the bar is replaced by a plain
line at most every ``log_seconds``, so a long run in the background can be followed.

The steps of a run that are not training steps (data preparation, tokenizer training,
validation, the final test decoding) are phases: ``with bar.phase("validation"): ...``
names the phase on the bar's label while training runs, shows a spinner before and after
it, and prints one line with its duration when it ends.

:func:`counted` words a count for what a run prints ("1 step", "2 steps").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


def counted(count: int, noun: str) -> str:
    """A count and its noun, singular for one: ``"1 step"``, ``"2 steps"``, ``"1,024 tokens"``
    (for the nouns the messages count: steps, pairs, lines, characters, tokens)."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


class TrainingProgress:
    """``with TrainingProgress(total_steps) as bar: bar.update(step, loss=..., lr=..., tokens_per_s=...)``."""

    def __init__(
        self, total_steps: int, enabled: bool = True, console: Console | None = None, log_seconds: float = 30.0,
        unit: str = "tok",
    ) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.total_steps = total_steps
        self.log_seconds = log_seconds
        self.unit = unit
        self.plain = enabled and not self.console.is_terminal
        self.started = self.last_line = time.perf_counter()
        self.progress = Progress(
            TextColumn("[bold]{task.fields[phase]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("lr {task.fields[lr]:.2e}"),
            TextColumn(f"{{task.fields[tokens_per_s]:,.0f}} {unit}/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled or self.plain,
        )
        self.task = self.progress.add_task(
            "train", total=total_steps, loss=float("nan"), lr=0.0, tokens_per_s=0.0, phase="train",
        )
        self.training = False  # between __enter__ and __exit__: the bar is on screen

    def __enter__(self) -> TrainingProgress:
        self.progress.start()
        self.training = True
        return self

    def __exit__(self, *exc) -> None:
        self.training = False
        self.progress.stop()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Report ``name`` while the body runs; then one line with how long it took."""
        if not self.enabled:
            yield
            return
        started = time.perf_counter()
        if self.training:  # the bar's label names the phase, then goes back to "train"
            self.progress.update(self.task, phase=name)
            try:
                yield
            finally:
                self.progress.update(self.task, phase="train")
            if not self.plain:
                return
        elif self.plain:
            yield
        else:
            with self.console.status(f"{name} ..."):
                yield
        self.console.print(f"{name}: {time.perf_counter() - started:,.1f}s", highlight=False)

    def update(self, step: int, **fields: float) -> None:
        self.progress.update(self.task, completed=step, **fields)
        now = time.perf_counter()
        if self.plain and fields and (now - self.last_line >= self.log_seconds or step == self.total_steps):
            self.last_line = now
            elapsed = now - self.started
            rate = fields.get("tokens_per_s", 0.0)
            eta = elapsed / max(step, 1) * (self.total_steps - step)
            loss = f"{fields['loss']:.4f}" if "loss" in fields else "-"  # none: every step of the interval skipped
            self.console.print(
                f"step {step}/{self.total_steps} loss {loss} "
                f"lr {fields.get('lr', 0.0):.2e} {rate:,.0f} {self.unit}/s elapsed {elapsed:,.0f}s ETA {eta:,.0f}s",
                highlight=False,
            )

    def summary(self, title: str, rows: dict[str, str]) -> None:
        """A two-column table printed at the end of a run."""
        if not self.enabled:
            return
        table = Table(title=title, show_header=False)
        for key, value in rows.items():
            table.add_row(key, value)
        self.console.print(table)
