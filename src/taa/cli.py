"""The ``taa`` command line.

    taa train RECIPE.yaml [--set key=value ...] [--out DIR] [--resume DIR] [--tracking mlflow|none]
    taa translate --checkpoint DIR [--beam N] [--max-len N] [--length-penalty A] [SENTENCE ...]
    taa evaluate --checkpoint DIR --source FILE --reference FILE [--beam N] [--length-penalty A] [--json]
    taa viz attention --checkpoint DIR --out FILE.png "sentence"
    taa model-info PRESET [--set key=value ...] [--json]
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
    """Parameter count per component and in total for a PRESET (e.g. vaswani-base, gpt2-small, bert-base, t5-small)."""
    try:
        fields = cfg.parse_overrides(overrides)
        if preset not in cfg.PRESETS:
            raise cfg.ConfigError(f"unknown preset {preset!r} (known: {', '.join(sorted(cfg.PRESETS))})")
        model_config = cfg.model_config_from_dict({"preset": preset, **fields}, prefix="")
    except cfg.ConfigError as error:
        _fail(error)
    import torch

    from taa.torch.hub import build_model

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(model_config)  # the class of the config's type: Transformer, GPT, BertModel, T5
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


LENGTH_PENALTY = click.option("--length-penalty", type=click.FloatRange(min=0), default=None,
                              help="Beam search's length penalty alpha (GNMT); default: the recipe's.")


def _alpha(length_penalty: float | None, recipe: cfg.RecipeConfig) -> float:
    """The length penalty given on the command line, else the one the model was trained with."""
    return recipe.data.length_penalty if length_penalty is None else length_penalty


@main.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="A translation run folder.")
@click.option("--beam", type=click.IntRange(min=1), default=4, show_default=True, help="Beam size (1 = greedy).")
@click.option("--max-len", type=click.IntRange(min=2), default=None, help="Longest output, in tokens.")
@LENGTH_PENALTY
@click.argument("sentences", nargs=-1)
def translate(checkpoint: Path, beam: int, max_len: int | None, length_penalty: float | None,
              sentences: tuple[str, ...]) -> None:
    """Translate SENTENCES, or one sentence a line from standard input; one translation a line out."""
    from taa.tasks.translation import translate as run_translation

    model, tokenizer, recipe = _load_translator(checkpoint)
    lines = list(sentences) if sentences else [line.rstrip("\n") for line in sys.stdin]
    outputs = run_translation(
        model, tokenizer, lines, beam=beam, length_penalty=_alpha(length_penalty, recipe),
        max_extra=recipe.data.max_extra, max_length=max_len,
    )
    for line in outputs:
        click.echo(line)


@main.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="A translation run folder.")
@click.option("--source", type=click.Path(path_type=Path), required=True, help="Source sentences (plain or .gz).")
@click.option("--reference", type=click.Path(path_type=Path), required=True, help="Reference translations.")
@click.option("--beam", type=click.IntRange(min=1), default=4, show_default=True, help="Beam size (1 = greedy).")
@LENGTH_PENALTY
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(checkpoint: Path, source: Path, reference: Path, beam: int, length_penalty: float | None,
             as_json: bool) -> None:
    """sacreBLEU (cased and lower-cased) and chrF of the model's translations of SOURCE."""
    from taa.data import DataError, read_parallel
    from taa.tasks.translation import bleu_scores
    from taa.tasks.translation import translate as run_translation

    try:
        pairs = read_parallel(source, reference)
    except DataError as error:
        _fail(error)
    model, tokenizer, recipe = _load_translator(checkpoint)
    alpha = _alpha(length_penalty, recipe)
    hypotheses = run_translation(
        model, tokenizer, [s for s, _ in pairs], beam=beam, length_penalty=alpha, max_extra=recipe.data.max_extra,
    )
    try:
        scores = {**bleu_scores(hypotheses, [r for _, r in pairs]), "sentences": len(pairs), "beam": beam,
                  "length_penalty": alpha}
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



# --------------------------------------------------------------------------------------
# Issue 4: Hugging Face interop, generation and sentence embeddings
# --------------------------------------------------------------------------------------

DTYPE_CHOICE = click.Choice(["float32", "bfloat16"])


def _load_pretrained(checkpoint: Path, dtype: str = "float32"):
    """``taa.torch.from_pretrained``; a bad folder is one line."""
    from taa.convert.state_dict import ConversionError
    from taa.torch.hub import from_pretrained

    try:
        return from_pretrained(checkpoint, dtype=None if dtype == "float32" else dtype)
    except ConversionError as error:
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
    from taa.convert import hf
    from taa.convert.state_dict import ConversionError
    from taa.torch.hub import copy_tokenizer, save_pretrained

    if (from_hf is None) == (to_hf is None):
        _fail(cfg.ConfigError("give exactly one of --from-hf DIR and --to-hf DIR"))
    source = from_hf if from_hf is not None else to_hf
    if out.resolve() == source.resolve():
        _fail(cfg.ConfigError(f"--out {out} is the folder being converted: write somewhere else"))
    try:
        if from_hf is not None:
            model = hf.load_hf_folder(from_hf)
            save_pretrained(model, out, tokenizer_from=from_hf)
            copied = [path.name for path in hf.tokenizer_files(from_hf)]
        else:
            pretrained = _load_pretrained(to_hf)
            model = pretrained.model
            hf.save_hf_folder(model, out)
            copied = copy_tokenizer(pretrained, out)
    except ConversionError as error:
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
@click.option("--max-new-tokens", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Sample with this temperature (no sampling option: greedy).")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Sample among the k most likely tokens.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Sample from the smallest set of tokens whose probability reaches p (nucleus).")
@click.option("--beam", type=click.IntRange(min=1), default=1, show_default=True, help="Beam size (1: no beam search).")
@click.option("--seed", type=int, default=None, help="Seed of the sampler.")
@click.option("--dtype", type=DTYPE_CHOICE, default="float32", show_default=True,
              help="bfloat16 casts the weights once (faster on CPUs with bf16 units).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (tokens, text) instead of streaming.")
def generate(checkpoint: Path, prompt: str | None, prompt_ids: str | None, max_new_tokens: int,
             temperature: float | None, top_k: int | None, top_p: float | None, beam: int, seed: int | None,
             dtype: str, as_json: bool) -> None:
    """Continue a prompt (GPT) or generate from a source (T5): greedy unless a sampling option is given.

    The text streams to standard output as it is produced, on the KV cache.
    """
    import torch

    from taa.torch.generate import generate as generate_tokens
    from taa.torch.hub import decode_tokens, encode_text, vocab_size

    if (prompt is None) == (prompt_ids is None):
        _fail(cfg.ConfigError("give the prompt as --prompt TEXT or as --prompt-ids \"ID ID ...\" (one of them)"))
    sampling = any(option is not None for option in (temperature, top_k, top_p))
    if sampling and beam > 1:
        _fail(cfg.ConfigError("--beam samples nothing: use --beam with no --temperature/--top-k/--top-p"))
    pretrained = _load_pretrained(checkpoint, dtype)
    if pretrained.architecture not in ("GPT", "T5ForConditionalGeneration", "Transformer"):
        _fail(cfg.ConfigError(f"{checkpoint}: a {pretrained.architecture} does not generate text "
                              "(taa generate needs a GPT, T5 or translation model)"))
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

    def decode(new_ids):
        return decode_tokens(tokenizer, new_ids, target=encoder_decoder)

    stream = None
    if not as_json and beam == 1:
        stream = _TextStream(decode) if tokenizer is not None else (
            lambda tokens: click.echo(f"{int(tokens[0])} ", nl=False))
        if tokenizer is not None and not encoder_decoder and prompt is not None:
            click.echo(prompt, nl=False)  # the continuation follows the prompt
    input_ids = torch.tensor([ids])
    try:
        output = generate_tokens(
            pretrained.model, input_ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
            top_p=top_p, num_beams=beam, seed=seed, streamer=stream,
        )
    except ValueError as error:  # e.g. a padded prompt past the context
        _fail(error)
    new_ids = output[0, 1 if encoder_decoder else len(ids):].tolist()
    text = decode(new_ids) if tokenizer is not None else None
    if as_json:
        click.echo(json.dumps({"tokens": new_ids, "text": text, "prompt_tokens": ids}))
        return
    if isinstance(stream, _TextStream):
        stream.finish(text)
    elif stream is None:  # beam search knows its answer only at the end
        click.echo(text if text is not None else " ".join(map(str, new_ids)), nl=False)
    click.echo()


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

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
