"""Experiment tracking. The base :class:`Tracker` records nothing (``--tracking none``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Tracker:
    """Where a run reports its parameters, metrics and files. This one drops them."""

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        pass
