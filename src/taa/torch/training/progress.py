"""A live progress bar for training: step, loss, learning rate, tokens/s and ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class TrainingProgress:
    """``with TrainingProgress(total_steps) as bar: bar.update(step, loss=..., lr=..., tokens_per_s=...)``."""

    def __init__(self, total_steps: int, enabled: bool = True, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("lr {task.fields[lr]:.2e}"),
            TextColumn("{task.fields[tokens_per_s]:,.0f} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
        )
        self.task = self.progress.add_task("train", total=total_steps, loss=float("nan"), lr=0.0, tokens_per_s=0.0)

    def __enter__(self) -> TrainingProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, step: int, **fields: float) -> None:
        self.progress.update(self.task, completed=step, **fields)

    def summary(self, title: str, rows: dict[str, str]) -> None:
        """A two-column table printed at the end of a run."""
        if not self.enabled:
            return
        table = Table(title=title, show_header=False)
        for key, value in rows.items():
            table.add_row(key, value)
        self.console.print(table)
