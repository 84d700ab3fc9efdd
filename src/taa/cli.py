"""The ``taa`` command line.

    taa train RECIPE.yaml [--set key=value ...] [--out DIR] [--resume DIR] [--tracking mlflow|none]
    taa translate --checkpoint DIR [--beam N] [--max-len N] [SENTENCE ...]
    taa evaluate --checkpoint DIR --source FILE --reference FILE [--beam N] [--json]
    taa viz attention --checkpoint DIR --out FILE.png "sentence"
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


def builtin_recipe(name: str) -> Path:
    """A recipe shipped with taa (the top-level ``recipes/`` folder), by file stem."""
    path = Path(__file__).resolve().parent / "recipes" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise cfg.ConfigError(f"{name}: no such recipe file or built-in recipe (built-in: {', '.join(known)})")
    return path


def default_recipe() -> Path:
    """The main job: a small Multi30k translation run when the data is found, else the copy task."""
    from taa.data import find_data_dir

    data = find_data_dir(None)
    has_multi30k = data is not None and (data / "multi30k" / "train.de.gz").is_file()
    return builtin_recipe("translate-multi30k-small" if has_multi30k else "copy")


@main.command()
@click.argument("recipe", required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field, e.g. train.steps=100.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run folder (default: runs/<name>).")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="Continue the run saved in this folder.")
@click.option("--tracking", type=click.Choice(["mlflow", "none"]), default="mlflow", show_default=True,
              help="Experiment tracking backend.")
@click.option("--progress/--no-progress", default=True, help="Show the live progress bar.")
def train(recipe: str | Path | None, overrides: tuple[str, ...], out: Path | None, resume: Path | None, tracking: str,
          progress: bool) -> None:
    """Train the model a RECIPE describes, then evaluate it and save a checkpoint.

    RECIPE is a YAML file or the name of a built-in recipe (copy, translate-multi30k, ...).
    Without one: translate-multi30k-small when Multi30k is found ($TAA_DATA), else copy.
    """
    from taa.data import DataError

    try:
        if recipe is None:
            recipe = default_recipe()
        else:
            path = Path(recipe)
            recipe = path if path.exists() or path.suffix in (".yaml", ".yml", ".json") else builtin_recipe(recipe)
        config = cfg.RecipeConfig.load(recipe, overrides)
        if resume is not None:
            from taa.torch.training.checkpoint import find_state_folder

            find_state_folder(resume)
        out = out if out is not None else (resume or Path("runs") / (config.name or recipe.stem))
        tracker = _make_tracker(tracking, config.name or recipe.stem)
        from taa.tasks import task_runner

        run = task_runner(config.task)  # the task's module, imported on demand
        with tracker:  # ends the tracked run FINISHED, FAILED or KILLED
            outcome = run(config, out=out, progress=progress, resume=resume, tracker=tracker)
    except (cfg.ConfigError, DataError) as error:
        _fail(error)
    _print_summary(config, outcome["metrics"], out)


def _make_tracker(kind: str, run_name: str):
    """The tracker ``--tracking`` names; a missing package or an unreachable store is one line."""
    from taa.tracking import make_tracker

    try:
        return make_tracker(kind, run_name=run_name)
    except Exception as error:  # ImportError, or whatever the backend raises on start
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise cfg.ConfigError(f"--tracking {kind}: {message} (use --tracking none to train without it)") from None


def _print_summary(config: cfg.RecipeConfig, metrics: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"taa train: {config.name or config.task}", show_header=False)
    for key, value in metrics.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:,.4f}")
        elif isinstance(value, int) and not isinstance(value, bool):
            table.add_row(key, f"{value:,}")
        else:
            table.add_row(key, str(value))
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


def _load_translator(checkpoint: Path):
    from taa.data import DataError
    from taa.tasks.translation import load_translator

    try:
        return load_translator(checkpoint)
    except (cfg.ConfigError, DataError) as error:
        _fail(error)


@main.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="A translation run folder.")
@click.option("--beam", type=click.IntRange(min=1), default=4, show_default=True, help="Beam size (1 = greedy).")
@click.option("--max-len", type=click.IntRange(min=2), default=None, help="Longest output, in tokens.")
@click.argument("sentences", nargs=-1)
def translate(checkpoint: Path, beam: int, max_len: int | None, sentences: tuple[str, ...]) -> None:
    """Translate SENTENCES, or one sentence a line from standard input; one translation a line out."""
    from taa.tasks.translation import translate as run_translation

    model, tokenizer, recipe = _load_translator(checkpoint)
    lines = list(sentences) if sentences else [line.rstrip("\n") for line in sys.stdin]
    outputs = run_translation(
        model, tokenizer, lines, beam=beam, length_penalty=recipe.data.length_penalty,
        max_extra=recipe.data.max_extra, max_length=max_len,
    )
    for line in outputs:
        click.echo(line)


@main.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="A translation run folder.")
@click.option("--source", type=click.Path(path_type=Path), required=True, help="Source sentences (plain or .gz).")
@click.option("--reference", type=click.Path(path_type=Path), required=True, help="Reference translations.")
@click.option("--beam", type=click.IntRange(min=1), default=4, show_default=True, help="Beam size (1 = greedy).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(checkpoint: Path, source: Path, reference: Path, beam: int, as_json: bool) -> None:
    """sacreBLEU (cased and lower-cased) and chrF of the model's translations of SOURCE."""
    from taa.data import DataError, read_parallel
    from taa.tasks.translation import bleu_scores
    from taa.tasks.translation import translate as run_translation

    try:
        pairs = read_parallel(source, reference)
    except DataError as error:
        _fail(error)
    model, tokenizer, recipe = _load_translator(checkpoint)
    hypotheses = run_translation(
        model, tokenizer, [s for s, _ in pairs], beam=beam, length_penalty=recipe.data.length_penalty,
        max_extra=recipe.data.max_extra,
    )
    try:
        scores = {**bleu_scores(hypotheses, [r for _, r in pairs]), "sentences": len(pairs), "beam": beam}
    except cfg.ConfigError as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(scores))
    else:
        click.echo(f"BLEU {scores['bleu']:.2f} | BLEU (lower-cased) {scores['bleu_lowercase']:.2f} | "
                   f"chrF {scores['chrf']:.2f} | {len(pairs)} sentences, beam {beam}")


@main.group()
def viz() -> None:
    """Pictures of a trained model."""


@viz.command("attention")
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="A translation run folder.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG file to write.")
@click.argument("sentence")
def viz_attention(checkpoint: Path, out: Path, sentence: str) -> None:
    """Encoder self-, decoder self- and cross-attention for SENTENCE, per layer and head."""
    import torch

    from taa.tasks.translation import translate as run_translation
    from taa.torch.attention import capture_attention

    try:
        from taa.plots import plot_attention
    except ImportError:
        _fail(cfg.ConfigError("plots need matplotlib: pip install 'taa[eval]'"))
    model, tokenizer, _ = _load_translator(checkpoint)
    translation = run_translation(model, tokenizer, [sentence], beam=1)[0]
    source_ids = tokenizer.encode_source(sentence)
    target_ids = tokenizer.encode_target(translation)[:-1]  # what the decoder reads: <s> + translation
    with torch.no_grad(), capture_attention(model) as recorded:
        model(torch.tensor([source_ids]), torch.tensor([target_ids]))
    weights = {name: values[0][0].numpy() for name, values in recorded.items() if values}
    source_tokens = tokenizer.tokens(sentence, "source") + ["</s>"]
    target_tokens = ["<s>"] + tokenizer.tokens(translation, "target")
    plot_attention(weights, source_tokens, target_tokens, out)
    click.echo(f"{translation}\nwrote {out}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
