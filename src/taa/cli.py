"""The ``taa`` command line.

    taa train RECIPE.yaml [--set key=value ...] [--out DIR] [--resume DIR] [--tracking mlflow|none]
    taa translate --checkpoint DIR [--beam N] [--max-len N] [--length-penalty A] [SENTENCE ...]
    taa evaluate --checkpoint DIR --source FILE --reference FILE [--beam N] [--length-penalty A] [--json]
    taa viz attention --checkpoint DIR --out FILE.png "sentence"
    taa model-info PRESET [--set key=value ...] [--json]
    taa models [--json]
    taa convert (--from-hf DIR | --to-hf DIR) --out DIR
    taa generate --checkpoint DIR (--prompt TEXT | --prompt-ids "ID ...") [--max-new-tokens N] [--temperature T]
                 [--top-k K] [--top-p P] [--beam N] [--seed S] [--dtype float32|bfloat16] [--json]
    taa embed --checkpoint DIR [--json] [--dtype float32|bfloat16] [--batch-size N] [SENTENCE ...]

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
from taa import registry
from taa.training.dtypes import DTYPES


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
            from taa.folders import find_state_folder

            find_state_folder(resume)
        out = out if out is not None else (resume or Path("runs") / (config.name or recipe.stem))
        tracker = _make_tracker(tracking, out.resolve().name)  # the run folder's name (runs/<recipe name> by default)
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
    """The run's figures, rounded (4 significant digits, integers with separators), lists and
    texts shortened to a line, and why training stopped in words."""
    import math

    from rich.console import Console
    from rich.table import Table

    def figure(value) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:,.0f}" if math.isfinite(value) and abs(value) >= 1000 else f"{value:.4g}"
        if isinstance(value, (list, tuple)):
            shown = ", ".join(figure(v) for v in value[:3])
            return f"{shown}, ... ({len(value)} in all)" if len(value) > 3 else shown
        if isinstance(value, dict):
            return ", ".join(f"{k} {figure(v)}" for k, v in value.items())
        text = " ".join(str(value).split())  # a text sample on one line
        return text if len(text) <= 60 else text[:57] + "..."

    train = config.train
    stopped = {
        "steps": f"all {train.steps:,} steps done",
        "time_budget": f"stopped by the time budget ({train.max_minutes:g} min)",
        "early_stopping": f"early stopping ({train.early_stopping} validations without improvement)",
    }
    table = Table(title=f"taa train: {config.name or config.task}", show_header=False)
    for key, value in metrics.items():
        table.add_row(key, stopped.get(value, str(value)) if key == "stop_reason" else figure(value))
    table.add_row("checkpoint", str(out))
    Console().print(table)


@main.command("model-info")
@click.argument("preset")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field, e.g. d_model=256.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def model_info(preset: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Parameter count per component and in total for a PRESET (e.g. vaswani-base, gpt2-small, bert-base, t5-small)."""
    try:
        fields = cfg.parse_overrides(overrides)
        registry.family_of_preset(preset)  # an unknown preset is one line naming the known ones
        model_config = cfg.model_config_from_dict({"preset": preset, **fields}, prefix="")
    except cfg.ConfigError as error:
        _fail(error)
    import torch

    from taa.torch.hub import build_model

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(model_config)  # the family's default class: Transformer, GPT, BertModel, T5
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


LENGTH_PENALTY = click.option(
    "--length-penalty", type=click.FloatRange(min=0), default=None,
    help="Beam search's length penalty alpha in ((5 + |Y|) / 6) ** alpha (GNMT); default: the checkpoint's.")


def _decoding(checkpoint, **options):
    """The checkpoint's decoding settings (its recipe's), with the options given on the
    command line (None: not given) in their place."""
    from taa.decoding import decoding_defaults

    try:
        return decoding_defaults(checkpoint).replace(**options)
    except ValueError as error:
        _fail(cfg.ConfigError(str(error)))


@main.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="A translation run folder.")
@click.option("--beam", type=click.IntRange(min=1), default=None,
              help="Beam size (1 = greedy); default: the recipe's data.beam.")
@click.option("--max-len", type=click.IntRange(min=2), default=None,
              help="Longest output, in tokens (default: source length + the recipe's data.max_extra).")
@LENGTH_PENALTY
@click.argument("sentences", nargs=-1)
def translate(checkpoint: Path, beam: int | None, max_len: int | None, length_penalty: float | None,
              sentences: tuple[str, ...]) -> None:
    """Translate SENTENCES, or one sentence a line from standard input; one translation a line out.

    Decodes as the run's final test evaluation did (its recipe's beam, length penalty and
    max_extra) unless an option says otherwise.
    """
    from taa.tasks.translation import translate as run_translation

    model, tokenizer, recipe = _load_translator(checkpoint)
    settings = _decoding(recipe, beam=beam, length_penalty=length_penalty)
    lines = list(sentences) if sentences else [line.rstrip("\n") for line in sys.stdin]
    outputs = run_translation(
        model, tokenizer, lines, beam=settings.beam, length_penalty=settings.length_penalty,
        max_extra=settings.max_extra, max_length=max_len,
    )
    for line in outputs:
        click.echo(line)


@main.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="A translation run folder.")
@click.option("--source", type=click.Path(path_type=Path), required=True, help="Source sentences (plain or .gz).")
@click.option("--reference", type=click.Path(path_type=Path), required=True, help="Reference translations.")
@click.option("--beam", type=click.IntRange(min=1), default=None,
              help="Beam size (1 = greedy); default: the recipe's data.beam.")
@LENGTH_PENALTY
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(checkpoint: Path, source: Path, reference: Path, beam: int | None, length_penalty: float | None,
             as_json: bool) -> None:
    """sacreBLEU (cased and lower-cased) and chrF of the model's translations of SOURCE.

    Decodes as the run's final test evaluation did (its recipe's beam, length penalty and
    max_extra) unless an option says otherwise: on the run's test set the figures are its own.
    """
    from taa.data import DataError, read_parallel
    from taa.tasks.translation import bleu_scores
    from taa.tasks.translation import translate as run_translation

    try:
        pairs = read_parallel(source, reference)
    except DataError as error:
        _fail(error)
    model, tokenizer, recipe = _load_translator(checkpoint)
    settings = _decoding(recipe, beam=beam, length_penalty=length_penalty)
    hypotheses = run_translation(
        model, tokenizer, [s for s, _ in pairs], beam=settings.beam, length_penalty=settings.length_penalty,
        max_extra=settings.max_extra,
    )
    try:
        scores = {**bleu_scores(hypotheses, [r for _, r in pairs]), "sentences": len(pairs), "beam": settings.beam,
                  "length_penalty": settings.length_penalty}
    except cfg.ConfigError as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(scores))
    else:
        click.echo(f"BLEU {scores['bleu']:.2f} | BLEU (lower-cased) {scores['bleu_lowercase']:.2f} | "
                   f"chrF {scores['chrf']:.2f} | {len(pairs)} sentences, beam {settings.beam}, "
                   f"length penalty {settings.length_penalty:g}")


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



# --------------------------------------------------------------------------------------
# Issue 4: Hugging Face interop, generation and sentence embeddings
# --------------------------------------------------------------------------------------

DTYPE_CHOICE = click.Choice(list(DTYPES))


def _load_pretrained(checkpoint: Path, dtype: str = "float32"):
    """``taa.torch.from_pretrained``; a bad folder is one line."""
    from taa.folders import CheckpointError
    from taa.torch.hub import from_pretrained

    try:
        return from_pretrained(checkpoint, dtype=None if dtype == "float32" else dtype)
    except CheckpointError as error:
        _fail(error)


@main.command()
@click.option("--from-hf", "from_hf", type=click.Path(path_type=Path), default=None,
              help="A Hugging Face model folder (config.json + model.safetensors) to convert to a taa folder.")
@click.option("--to-hf", "to_hf", type=click.Path(path_type=Path), default=None,
              help="A taa checkpoint folder (a training run or a converted model) to write for transformers.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The folder to write.")
def convert(from_hf: Path | None, to_hf: Path | None, out: Path) -> None:
    """Convert weights between Hugging Face folders and taa checkpoint folders (safetensors only).

    GPT-2 (GPT2LMHeadModel), BERT (BertModel, BertForMaskedLM, BertForSequenceClassification)
    and T5 (T5ForConditionalGeneration). The tokenizer files travel along.
    """
    from taa.convert.hf import tokenizer_files
    from taa.folders import CheckpointError
    from taa.torch.convert.hf import load_hf_folder, save_hf_folder
    from taa.torch.hub import copy_tokenizer, save_pretrained

    if (from_hf is None) == (to_hf is None):
        _fail(cfg.ConfigError("give exactly one of --from-hf DIR and --to-hf DIR"))
    source = from_hf if from_hf is not None else to_hf
    if out.resolve() == source.resolve():
        _fail(cfg.ConfigError(f"--out {out} is the folder being converted: write somewhere else"))
    try:
        if from_hf is not None:
            model = load_hf_folder(from_hf)
            save_pretrained(model, out, tokenizer_from=from_hf)
            copied = [path.name for path in tokenizer_files(from_hf)]
        else:
            pretrained = _load_pretrained(to_hf)
            model = pretrained.model
            save_hf_folder(model, out)
            copied = copy_tokenizer(pretrained, out)
    except CheckpointError as error:
        _fail(error)
    parameters = sum(p.numel() for p in model.parameters())
    tokenizer = f", tokenizer: {', '.join(copied)}" if copied else ", no tokenizer"
    click.echo(f"{type(model).__name__} ({parameters:,} parameters){tokenizer}: {source} -> {out}")


def _parse_ids(text: str, vocab_size: int) -> list[int]:
    try:
        ids = [int(token) for token in text.replace(",", " ").split()]
    except ValueError:
        raise cfg.ConfigError(f"--prompt-ids {text!r}: give token ids separated by spaces, e.g. \"464 3290\"") from None
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise cfg.ConfigError(f"--prompt-ids: {bad} outside the model's vocabulary of {vocab_size}")
    return ids


GENERATE_NEW_TOKENS = 50  # taa generate's new tokens for a decoder-only model


def _within_context(prompt_length: int, max_new_tokens: int | None, encoder_decoder: bool, beam: int,
                    limit: int | None) -> int | None:
    """``max_new_tokens``, after one line on standard error when it passes the model's context:
    a decoder-only model slides its context past it, an encoder-decoder stops at its limit
    (beam search past the context is an error: ``decode`` raises it)."""
    if limit is None or max_new_tokens is None:
        return max_new_tokens  # None: an encoder-decoder's limit is capped by the decoder
    if encoder_decoder and max_new_tokens > limit:
        click.echo(f"taa generate: {max_new_tokens} new tokens pass the decoder's {limit} positions "
                   f"(max_length): stopping at {limit}", err=True)
        return limit
    if not encoder_decoder and prompt_length + max_new_tokens > limit and beam == 1:
        click.echo(f"taa generate: {prompt_length} prompt + {max_new_tokens} new tokens pass the model's context of "
                   f"{limit} tokens (max_length): past it each new token sees only the last {limit} tokens, "
                   "without the KV cache", err=True)
    return max_new_tokens


class _TextStream:
    """Prints generated text as it comes: decodes all tokens so far and writes what is new
    (a byte-level BPE may need several tokens for one character: those wait)."""

    def __init__(self, decode) -> None:
        self.decode, self.ids, self.printed = decode, [], ""

    def __call__(self, tokens) -> None:
        self.ids.append(int(tokens[0]))
        self.show(self.decode(self.ids))

    def show(self, text: str) -> None:
        if text.endswith("\ufffd") or not text.startswith(self.printed):
            return  # an unfinished character, or a tokenizer that rewrote earlier text: wait
        click.echo(text[len(self.printed):], nl=False)  # click flushes
        self.printed = text

    def finish(self, text: str) -> None:
        """Print the rest of the final text (whole, on a new line, if earlier text changed)."""
        if text.startswith(self.printed):
            click.echo(text[len(self.printed):], nl=False)
        else:
            click.echo("\n" + text, nl=False)
        self.printed = text


@main.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True,
              help="A Hugging Face folder or taa checkpoint of a GPT (continues the prompt) or T5 / translation model.")
@click.option("--prompt", default=None, help="The prompt text (for T5 and translation models: the source).")
@click.option("--prompt-ids", "prompt_ids", default=None, help='The prompt as token ids, e.g. "464 3290 318".')
@click.option("--max-new-tokens", type=click.IntRange(min=0), default=None,
              help=f"New tokens (default: {GENERATE_NEW_TOKENS}; an encoder-decoder: its source length + the "
                   "recipe's data.max_extra).")
@click.option("--sample/--no-sample", "sample", default=None,
              help="Sample, or take the most likely token (default: the checkpoint's; a language model run "
                   "samples as its recipe's text sample did).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Sample with this temperature.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Sample among the k most likely tokens.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Sample from the smallest set of tokens whose probability reaches p (nucleus).")
@click.option("--beam", type=click.IntRange(min=1), default=None,
              help="Beam size (1: no beam search); default: the checkpoint's (a translation run's data.beam).")
@LENGTH_PENALTY
@click.option("--seed", type=int, default=None,
              help="Seed of the sampler (default: a language model run's train.seed).")
@click.option("--dtype", type=DTYPE_CHOICE, default="float32", show_default=True,
              help="bfloat16 casts the weights once (faster on CPUs with bf16 units).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (tokens, text) instead of streaming.")
def generate(checkpoint: Path, prompt: str | None, prompt_ids: str | None, max_new_tokens: int | None,
             sample: bool | None, temperature: float | None, top_k: int | None, top_p: float | None,
             beam: int | None, length_penalty: float | None, seed: int | None, dtype: str, as_json: bool) -> None:
    """Continue a prompt (GPT) or generate from a source (T5, a translation run).

    Decodes as the checkpoint says unless an option says otherwise: a translation run
    with its recipe's beam search (as `taa translate`), a language model run sampling as
    its recipe's text sample did, a Hugging Face folder as transformers would (its
    generation_config.json; beam search with |Y| ** alpha); else greedy. A sampling
    option (--temperature, --top-k, --top-p) samples.

    The text streams to standard output as it is produced, on the KV cache, and ends
    with a newline. When the prompt and the new tokens pass the model's context, one
    line on standard error says so before decoding starts: a decoder-only model then
    slides its context (each further token sees the last max_length tokens), an
    encoder-decoder stops at its decoder's max_length positions.
    """
    import torch

    from taa.torch.decoding_steps import max_positions
    from taa.torch.generate import decode as decode_tokens_of
    from taa.text import decode_tokens, encode_text
    from taa.torch.hub import vocab_size

    if (prompt is None) == (prompt_ids is None):
        _fail(cfg.ConfigError("give the prompt as --prompt TEXT or as --prompt-ids \"ID ID ...\" (one of them)"))
    sampling_options = any(option is not None for option in (temperature, top_k, top_p))
    if sampling_options and beam is not None and beam > 1:
        _fail(cfg.ConfigError("--beam samples nothing: use --beam with no --temperature/--top-k/--top-p"))
    if sampling_options and sample is False:
        _fail(cfg.ConfigError("--no-sample samples nothing: use it with no --temperature/--top-k/--top-p"))
    if sample and beam is not None and beam > 1:
        _fail(cfg.ConfigError("--beam samples nothing: use --beam with no --sample"))
    pretrained = _load_pretrained(checkpoint, dtype)
    if not registry.family_of_architecture(pretrained.architecture).generates_text:
        generating = ", ".join(family.name for family in registry.families() if family.generates_text)
        _fail(cfg.ConfigError(f"{checkpoint}: a {pretrained.architecture} does not generate text "
                              f"(taa generate needs a model of one of the families {generating})"))
    tokenizer, encoder_decoder = pretrained.tokenizer, pretrained.is_encoder_decoder
    try:
        if prompt_ids is not None:
            ids = _parse_ids(prompt_ids, vocab_size(pretrained))
        elif tokenizer is None:
            raise cfg.ConfigError(f"{checkpoint} has no tokenizer: give the prompt as --prompt-ids \"ID ID ...\"")
        else:
            ids = encode_text(tokenizer, prompt, source=encoder_decoder)
        if not ids and not encoder_decoder and getattr(pretrained.config, "bos_id", None) is not None:
            ids = [pretrained.config.bos_id]  # an empty prompt: start from the start token
        if not ids:
            raise cfg.ConfigError("the prompt is empty: give at least one token")
    except Exception as error:  # ConfigError, or a character the vocabulary cannot spell (DataError)
        _fail(error)

    # The checkpoint's settings, an option given in place of its field. Sampling and beam
    # search exclude each other: asking for one turns the other off.
    from taa.decoding import decoding_defaults

    if sampling_options:
        sample = True
    elif sample is None:  # not said: no sampling when a beam is asked for, else the checkpoint's
        sample = decoding_defaults(pretrained).sample and (beam is None or beam == 1)
    settings = _decoding(pretrained, sample=sample, beam=1 if sample else beam, length_penalty=length_penalty,
                         temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    if max_new_tokens is None and not encoder_decoder:
        max_new_tokens = GENERATE_NEW_TOKENS
    max_new_tokens = _within_context(len(ids), max_new_tokens, encoder_decoder, settings.beam,
                                     max_positions(pretrained.model))

    def decode(new_ids):
        return decode_tokens(tokenizer, new_ids, target=encoder_decoder)

    stream = None
    if not as_json and settings.beam == 1:
        stream = _TextStream(decode) if tokenizer is not None else (
            lambda tokens: click.echo(f"{int(tokens[0])} ", nl=False))
        if tokenizer is not None and not encoder_decoder and prompt is not None:
            click.echo(prompt, nl=False)  # the continuation follows the prompt
    try:
        decoded = decode_tokens_of(pretrained.model, torch.tensor([ids]), None, settings,
                                   max_new_tokens=max_new_tokens, streamer=stream)
    except ValueError as error:  # e.g. beam search past the context
        _fail(error)
    except KeyboardInterrupt:  # stopped while streaming: end the line
        click.echo()
        raise SystemExit(130) from None
    new_ids = decoded.tokens[0].tolist()
    text = decode(new_ids) if tokenizer is not None else None
    if as_json:
        click.echo(json.dumps({"tokens": new_ids, "text": text, "prompt_tokens": ids}))
        return
    if isinstance(stream, _TextStream):
        stream.finish(text)
    elif stream is None:  # beam search knows its answer only at the end
        text = text if text is not None else " ".join(map(str, new_ids))
        click.echo(text, nl=False)
    if not (text or "").endswith("\n"):
        click.echo()  # the output ends with one newline


@main.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True,
              help="A BERT folder with its tokenizer (e.g. all-MiniLM-L6-v2), Hugging Face or taa.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list of vectors.")
@click.option("--dtype", type=DTYPE_CHOICE, default="float32", show_default=True,
              help="bfloat16 casts the weights once (faster on CPUs with bf16 units).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.argument("sentences", nargs=-1)
def embed(checkpoint: Path, as_json: bool, dtype: str, batch_size: int, sentences: tuple[str, ...]) -> None:
    """Sentence embeddings of SENTENCES (or of each line of standard input): the mean of BERT's
    last hidden states over real tokens, L2-normalised (Sentence-BERT). One vector a line."""
    from taa.torch.models.bert import BertModel, sentence_embeddings

    pretrained = _load_pretrained(checkpoint, dtype)
    model = getattr(pretrained.model, "bert", pretrained.model)  # a task model's BERT backbone
    if not isinstance(model, BertModel):
        _fail(cfg.ConfigError(f"{checkpoint}: a {pretrained.architecture}, not a BERT model (taa embed needs one)"))
    tokenizer = pretrained.tokenizer
    if not hasattr(tokenizer, "encode_batch"):
        _fail(cfg.ConfigError(f"{checkpoint}: no Hugging Face tokenizer (tokenizer.json) that adds [CLS] and [SEP]"))
    import torch

    lines = list(sentences) if sentences else [line.rstrip("\n") for line in sys.stdin]
    with torch.inference_mode():
        vectors = sentence_embeddings(model, tokenizer, lines, batch_size=batch_size) if lines else None
    rows = vectors.tolist() if vectors is not None else []
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        click.echo(" ".join(f"{value:.7g}" for value in row))


@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list, a row per family.")
def models(as_json: bool) -> None:
    """The model families taa knows: presets, tasks, frameworks and Hugging Face classes."""
    rows = registry.summary()
    if as_json:
        click.echo(json.dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="taa models", show_lines=True)
    for column in ("family", "presets", "tasks", "frameworks", "HF architectures"):
        table.add_column(column, overflow="fold")  # a narrow terminal wraps names, never cuts them
    for row in rows:
        table.add_row(row["family"], "\n".join(row["presets"]), "\n".join(row["tasks"]) or "-",
                      ", ".join(row["frameworks"]), "\n".join(row["hf_architectures"]) or "-")
    Console().print(table)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
