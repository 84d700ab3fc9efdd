"""The ``taa`` command line.

    taa train RECIPE.yaml [--set key=value ...] [--out DIR] [--no-progress]
    taa model-info PRESET [--set key=value ...] [--json]

Frameworks are imported inside the commands, so ``taa --help`` stays fast. Bad input
(a missing file, an unknown field, a bad value) ends with one line naming it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from taa import __version__
from taa import config as cfg


def _fail(error: Exception) -> None:
    raise click.ClickException(str(error))


@click.group()
@click.version_option(__version__, prog_name="taa")
def main() -> None:
    """taa: Transformer Architecture Adventures."""


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field, e.g. train.steps=100.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Checkpoint folder (default: runs/<name>).")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="Continue the run saved in this folder.")
@click.option("--progress/--no-progress", default=True, help="Show the live progress bar.")
def train(recipe: Path, overrides: tuple[str, ...], out: Path | None, resume: Path | None, progress: bool) -> None:
    """Train the model a RECIPE (YAML) describes, then evaluate it and save a checkpoint."""
    try:
        config = cfg.RecipeConfig.load(recipe, overrides)
        if resume is not None:
            from taa.torch.training.checkpoint import find_state_folder

            find_state_folder(resume)
    except cfg.ConfigError as error:
        _fail(error)
    out = out if out is not None else (resume or Path("runs") / (config.name or recipe.stem))
    from taa.tasks import copy as copy_task

    runners = {"copy": copy_task.run}
    outcome = runners[config.task](config, out=out, progress=progress, resume=resume)
    metrics = outcome["metrics"]
    _print_summary(config, metrics, out)


def _print_summary(config: cfg.RecipeConfig, metrics: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"taa train: {config.name or config.task}", show_header=False)
    for key, value in metrics.items():
        table.add_row(key, f"{value:,.4f}" if isinstance(value, float) else f"{value:,}")
    table.add_row("checkpoint", str(out))
    Console().print(table)


@main.command("model-info")
@click.argument("preset")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field, e.g. d_model=256.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def model_info(preset: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Parameter count per component and in total for a PRESET (e.g. vaswani-base)."""
    try:
        fields = cfg.parse_overrides(overrides)
        if preset not in cfg.PRESETS:
            raise cfg.ConfigError(f"unknown preset {preset!r} (known: {', '.join(sorted(cfg.PRESETS))})")
        model_config = cfg.model_config_from_dict({"preset": preset, **fields}, prefix="")
    except cfg.ConfigError as error:
        _fail(error)
    import torch

    from taa.torch.models.transformer import Transformer

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = Transformer(model_config)
    components = model.parameter_breakdown()
    total = model.num_parameters()
    if as_json:
        click.echo(json.dumps({
            "preset": preset, "parameters": total, "components": components, "config": cfg.to_dict(model_config),
        }))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{preset}: {total / 1e6:.2f}M parameters")
    table.add_column("component")
    table.add_column("parameters", justify="right")
    for name, count in components.items():
        table.add_row(name, f"{count:,}")
    table.add_row("[bold]total", f"[bold]{total:,}")
    Console().print(table)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
