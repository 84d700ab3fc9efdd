"""What every task does around :meth:`Trainer.fit`: the summary metrics and the run folder.

A run folder (``taa train --out DIR``) is the same for every task: ``model.safetensors``,
``recipe.yaml``, ``metrics.json``, the task's files (``tokenizer/``, a text sample, ...),
``training_curves.png``, and the trainer's ``state/`` and ``best/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

from torch import nn

from taa import config as cfg
from taa.torch.training import Trainer, TrainResult, save_checkpoint
from taa.tracking import Tracker


def training_metrics(result: TrainResult, trainer: Trainer, model: nn.Module) -> dict[str, Any]:
    """Steps, time, speed and the loss of the run, as every task reports them."""
    return {
        "steps": result.steps,
        "train_seconds": result.seconds,
        "tokens_per_second": result.tokens_per_second,
        "final_train_loss": result.final_loss,
        "best_steps": [step for _, step in trainer.state.best],
        "stopped_early": result.stopped_early,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def selected_metrics(trainer: Trainer, result: TrainResult) -> dict[str, float]:
    """The validation metrics of the weights the model holds after ``fit``.

    With a run folder the trainer reloads the best weights by ``select_metric``: their
    evaluation. Without one the model keeps its last weights: the last evaluation. An
    average of several kept checkpoints (``average_best``) was never evaluated during the
    run, so it is evaluated here.
    """
    if not result.evaluations:
        return {}
    if trainer.train.average_best and len(trainer.state.best) > 1 and trainer.evaluate is not None:
        return dict(trainer.evaluate(trainer.model))
    evaluations = {e["step"]: e for e in result.evaluations}
    step = trainer.state.best[0][1] if trainer.state.best else result.evaluations[-1]["step"]
    return {k: v for k, v in evaluations[step].items() if k != "step"}


def save_run(
    out: Optional[str | Path],
    model: nn.Module,
    recipe: cfg.RecipeConfig,
    metrics: dict[str, Any],
    result: TrainResult,
    tracker: Tracker,
    write_extra: Optional[Callable[[Path], None]] = None,
    artifacts: Iterable[str] = (),
) -> None:
    """Write the final checkpoint, the training curves, and hand the files to the tracker."""
    floats = {k: v for k, v in metrics.items() if isinstance(v, float)}
    tracker.log_metrics(floats, result.steps)
    if out is None:
        return
    out = Path(out)
    save_checkpoint(out, model, recipe, metrics, write_extra=write_extra)
    try:
        from taa.plots import plot_training_curves
    except ImportError:  # matplotlib missing: no picture, the run still counts
        pass
    else:
        plot_training_curves(result.history, result.evaluations, out / "training_curves.png")
    for name in ("recipe.yaml", "metrics.json", "training_curves.png", "model.safetensors", *artifacts):
        if (out / name).exists():
            tracker.log_artifact(out / name)
