"""A live progress bar for training: step, loss, learning rate, tokens/s and ETA.

The rate counts what the loss is averaged over: tokens for language and translation,
sentences for a classifier (``unit="sent"``).

When the output is not a terminal (a log file, CI), the bar is replaced by a plain
line at most every ``log_seconds``, so a long run in the background can be followed.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


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
            TextColumn("[bold]train"),
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
        self.task = self.progress.add_task("train", total=total_steps, loss=float("nan"), lr=0.0, tokens_per_s=0.0)

    def __enter__(self) -> TrainingProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, step: int, **fields: float) -> None:
        self.progress.update(self.task, completed=step, **fields)
        now = time.perf_counter()
        if self.plain and fields and (now - self.last_line >= self.log_seconds or step == self.total_steps):
            self.last_line = now
            elapsed = now - self.started
            rate = fields.get("tokens_per_s", 0.0)
            eta = elapsed / max(step, 1) * (self.total_steps - step)
            self.console.print(
                f"step {step}/{self.total_steps} loss {fields.get('loss', float('nan')):.4f} "
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
