"""The Python API: one function per ``taa`` command, called as the command line calls it.

    from taa import api

    api.train("copy", overrides=["train.steps=300"], out="runs/copy", tracking="none")
    api.classify("runs/sst2", sentences=["a gripping, funny film"])

Each function takes the command's options as keyword arguments of the same names
(``--checkpoint DIR`` is ``checkpoint=DIR``, ``--max-new-tokens`` is ``max_new_tokens``,
``--set`` is ``overrides``) and returns what the command prints with ``--json``: dicts,
lists, strings and numbers. :mod:`taa.cli` is a thin layer over it that parses the
options, calls the function and prints what it returns.

Bad input (a missing file, a bad line, a folder of the wrong kind, options that exclude
each other) raises :class:`taa.config.ConfigError` (a bad folder: its subclass
:class:`taa.folders.CheckpointError`) or :class:`taa.data.DataError`, with a one-line
message naming the file, the line or the option. Whether a model can do what a command
asks (generate text, classify, embed) is decided by its family and task in
:mod:`taa.registry`. Frameworks are imported inside the functions: ``import taa.api``
imports none.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

from taa import config as cfg
from taa import registry
from taa.folders import CheckpointError

__all__ = [
    "attention_weights", "classify", "convert", "embed", "evaluate", "generate", "model_info", "models",
    "plot_attention", "train", "translate",
]

PathLike = str | Path


# --------------------------------------------------------------------------------------
# taa train
# --------------------------------------------------------------------------------------


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


def resolve_recipe(recipe: Optional[PathLike]) -> Path:
    """A recipe file, a built-in recipe's name, or None: :func:`default_recipe`."""
    if recipe is None:
        return default_recipe()
    path = Path(recipe)
    return path if path.is_file() or path.suffix in (".yaml", ".yml", ".json") else builtin_recipe(str(recipe))


def train(recipe: Optional[PathLike] = None, *, overrides: Sequence[str] = (), out: Optional[PathLike] = None,
          resume: Optional[PathLike] = None, tracking: str = "mlflow", progress: bool = True) -> dict[str, Any]:
    """Train the model a recipe describes, evaluate it and save the run folder ``out``
    (default: ``runs/<recipe name>``; ``resume``: continue the run saved there).

    Returns ``{"name", "task", "checkpoint", "metrics", "stopped"}``: the run's figures
    (as its ``metrics.json``) and why training stopped, in words.
    """
    from taa.tasks import task_runner

    path = resolve_recipe(recipe)
    config = cfg.RecipeConfig.load(path, list(overrides))
    if resume is not None:
        from taa.folders import find_state_folder

        resume = Path(resume)
        find_state_folder(resume)
    folder = Path(out) if out is not None else (resume or Path("runs") / (config.name or path.stem))
    tracker = _make_tracker(tracking, folder.resolve().name)  # the MLflow run is named after the run folder
    run = task_runner(config.task)  # the task's module, imported on demand
    with tracker:  # ends the tracked run FINISHED, FAILED or KILLED
        outcome = run(config, out=folder, progress=progress, resume=resume, tracker=tracker)
    return _train_result(config, outcome["metrics"], folder)


def _train_result(config: cfg.RecipeConfig, metrics: dict[str, Any], folder: Path) -> dict[str, Any]:
    """What :func:`train` returns, with the stop reason in words."""
    train = config.train
    stopped = {
        "steps": f"all {train.steps:,} steps done",
        "time_budget": f"stopped by the time budget ({train.max_minutes:g} min)",
        "early_stopping": f"early stopping ({train.early_stopping} validations without improvement)",
    }
    reason = metrics.get("stop_reason")
    return {"name": config.name, "task": config.task, "checkpoint": str(folder), "metrics": dict(metrics),
            "stopped": stopped.get(reason, str(reason)) if reason is not None else None}


def _make_tracker(kind: str, run_name: str):
    """The tracker ``tracking`` names; a missing package or a store that does not start is one line."""
    from taa.tracking import backend_errors, make_tracker

    try:
        return make_tracker(kind, run_name=run_name)
    except (ImportError, ValueError, OSError, *backend_errors()) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise cfg.ConfigError(f"--tracking {kind}: {message} (use --tracking none to train without it)") from None


# --------------------------------------------------------------------------------------
# taa models, taa model-info, taa convert
# --------------------------------------------------------------------------------------


def models() -> list[dict[str, Any]]:
    """The model families taa knows, a row each: presets, tasks, frameworks, Hugging Face classes."""
    return registry.summary()


def model_info(preset: str, *, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Parameters per component and in total of a preset's model (``overrides``: ``d_model=256``, ...).

    Returns ``{"preset", "parameters", "components", "config"}``.
    """
    fields = cfg.parse_overrides(list(overrides))
    registry.family_of_preset(preset)  # an unknown preset is one line naming the known ones
    model_config = cfg.model_config_from_dict({"preset": preset, **fields}, prefix="")
    import torch

    from taa.torch.hub import build_model

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(model_config)  # the family's default class
    return {"preset": preset, "parameters": model.num_parameters(), "components": model.parameter_breakdown(),
            "config": cfg.to_dict(model_config)}


def convert(*, from_hf: Optional[PathLike] = None, to_hf: Optional[PathLike] = None,
            out: PathLike) -> dict[str, Any]:
    """A Hugging Face folder to a taa model folder (``from_hf``), or a taa folder (a run or a
    converted model) to a Hugging Face folder (``to_hf``), written to ``out``; the tokenizer
    files travel along.

    Returns ``{"architecture", "parameters", "tokenizer", "source", "out"}`` (``tokenizer``:
    the tokenizer files copied).
    """
    from taa.convert.hf import tokenizer_files
    from taa.torch.convert.hf import load_hf_folder, save_hf_folder
    from taa.torch.hub import copy_tokenizer, save_pretrained

    if (from_hf is None) == (to_hf is None):
        raise cfg.ConfigError("give exactly one of --from-hf DIR and --to-hf DIR")
    source, out = Path(from_hf if from_hf is not None else to_hf), Path(out)
    if out.resolve() == source.resolve():
        raise cfg.ConfigError(f"--out {out} is the folder being converted: write somewhere else")
    if from_hf is not None:
        model = load_hf_folder(source)
        save_pretrained(model, out, tokenizer_from=source)
        copied = [path.name for path in tokenizer_files(source)]
    else:
        pretrained = load(source)
        model = pretrained.model
        save_hf_folder(model, out)
        copied = copy_tokenizer(pretrained, out)
    return {"architecture": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer": copied, "source": str(source), "out": str(out)}


# --------------------------------------------------------------------------------------
# Loading, and what a loaded model can do (from the registry)
# --------------------------------------------------------------------------------------


def load(checkpoint: PathLike, dtype: str = "float32"):
    """:func:`taa.torch.from_pretrained` of any folder (``dtype``: ``bfloat16`` casts the weights)."""
    from taa.torch.hub import from_pretrained

    return from_pretrained(checkpoint, dtype=None if dtype == "float32" else dtype)


def tasks_of(pretrained) -> list[str]:
    """The tasks a loaded model serves: a training run's own task, else every task of the
    registry that trains its class (a Hugging Face GPT2LMHeadModel: ``language_model``)."""
    if pretrained.recipe is not None:
        return [pretrained.recipe.task]
    return [spec.name for spec in registry.tasks() if spec.architecture == pretrained.architecture]


def _hugging_face_tokenizer(pretrained, checkpoint: PathLike, needed_for: str):
    """The folder's ``tokenizers.Tokenizer`` (one that adds BERT's [CLS] and [SEP])."""
    tokenizer = pretrained.tokenizer
    if not hasattr(tokenizer, "encode_batch"):
        raise cfg.ConfigError(f"{checkpoint}: no Hugging Face tokenizer (tokenizer.json) that adds [CLS] and [SEP] "
                              f"({needed_for} needs one)")
    return tokenizer


# --------------------------------------------------------------------------------------
# taa embed, taa classify
# --------------------------------------------------------------------------------------


def embed(checkpoint: PathLike, *, sentences: Sequence[str], dtype: str = "float32",
          batch_size: int = 32) -> list[list[float]]:
    """Sentence embeddings (Sentence-BERT): the mean of a BERT's last hidden states over the
    real tokens, L2-normalised; a vector per sentence."""
    pretrained = load(checkpoint, dtype)
    family = registry.family_of_architecture(pretrained.architecture)
    if not family.embeds_sentences:
        raise cfg.ConfigError(f"{checkpoint}: a {pretrained.architecture}, not a model that embeds sentences "
                              f"(taa embed needs a BERT)")
    tokenizer = _hugging_face_tokenizer(pretrained, checkpoint, "taa embed")
    # A task model (BertForMaskedLM, ...) holds the family's default class, its encoder, as .bert
    encoder = pretrained.model if pretrained.architecture == family.default_architecture else pretrained.model.bert
    if not sentences:
        return []
    import torch

    from taa.torch.models.bert import sentence_embeddings

    with torch.inference_mode():
        return sentence_embeddings(encoder, tokenizer, list(sentences), batch_size=batch_size).tolist()


def classify(checkpoint: PathLike, *, sentences: Sequence[str], batch_size: int = 32) -> list[dict[str, Any]]:
    """Each sentence's label and the probability of every label, by a sequence classifier
    (a ``classification`` run, or a Hugging Face BertForSequenceClassification folder).

    Returns ``[{"sentence", "label", "label_id", "probabilities"}, ...]``: ``label`` is the
    label's name when the run has names (``data.label_names``, SST-2's ``negative`` and
    ``positive``, a Hugging Face ``id2label``), else its id; ``probabilities`` maps each
    label (name, or id as text) to its probability.
    """
    from taa.tasks.classification import label_names, probabilities

    pretrained = _load_classifier(checkpoint)
    tokenizer = _hugging_face_tokenizer(pretrained, checkpoint, "taa classify")
    names = label_names(pretrained)
    keys = names or [str(i) for i in range(pretrained.config.num_labels)]
    results = []
    for sentence, row in zip(sentences, probabilities(pretrained.model, tokenizer, sentences, batch_size)):
        best = max(range(len(row)), key=row.__getitem__)
        results.append({"sentence": sentence, "label": names[best] if names else best, "label_id": best,
                        "probabilities": dict(zip(keys, row))})
    return results


def _load_classifier(checkpoint: PathLike):
    pretrained = load(checkpoint)
    if "classification" not in tasks_of(pretrained):
        raise CheckpointError(f"{checkpoint}: {_what(pretrained)}, not a sentence classifier "
                              f"(a {registry.task('classification').architecture})")
    return pretrained


def _what(pretrained) -> str:
    """``a 'translation' run (a Transformer)`` or ``a GPT``: what a loaded folder holds."""
    if pretrained.recipe is not None:
        return f"a {pretrained.recipe.task!r} run (a {pretrained.architecture})"
    return f"a {pretrained.architecture}"


# --------------------------------------------------------------------------------------
# taa translate, taa evaluate
# --------------------------------------------------------------------------------------


def _load_translator(checkpoint: PathLike):
    from taa.tasks.translation import load_translator

    return load_translator(checkpoint)


def _decoding(checkpoint, **options):
    """The checkpoint's decoding settings (its recipe's, or a Hugging Face folder's), with
    the options given (None: not given) in their place."""
    from taa.decoding import decoding_defaults

    try:
        return decoding_defaults(checkpoint).replace(**options)
    except ValueError as error:  # the settings check themselves: one line naming the field
        raise cfg.ConfigError(str(error)) from None


def translate(checkpoint: PathLike, *, sentences: Sequence[str], beam: Optional[int] = None,
              max_len: Optional[int] = None, length_penalty: Optional[float] = None) -> list[str]:
    """Translations of ``sentences`` by a translation run, decoded as its final test
    evaluation was (its recipe's beam, length penalty and max_extra) unless an option says
    otherwise; ``max_len`` caps every output at that many tokens."""
    from taa.tasks.translation import translate as run_translation

    model, tokenizer, recipe = _load_translator(checkpoint)
    settings = _decoding(recipe, beam=beam, length_penalty=length_penalty)
    return run_translation(model, tokenizer, list(sentences), beam=settings.beam,
                           length_penalty=settings.length_penalty, max_extra=settings.max_extra, max_length=max_len)


def evaluate(checkpoint: PathLike, *, source: Optional[PathLike] = None, reference: Optional[PathLike] = None,
             data: Optional[PathLike] = None, beam: Optional[int] = None,
             length_penalty: Optional[float] = None) -> dict[str, Any]:
    """Score a checkpoint on a file; what is scored follows its task (:mod:`taa.registry`):

    - a translation run, ``source`` and ``reference``: sacreBLEU (cased and lower-cased) and
      chrF of its translations, decoded as :func:`translate` decodes;
    - a classifier, ``data`` (``sentence<TAB>label`` or ``label sentence`` lines): accuracy,
      mean loss and per-label precision, recall and F1;
    - a language model, ``data`` (a text file): mean loss per token and perplexity.

    Every task module with a ``score_file(pretrained, path)`` function scores ``data``.
    """
    if data is not None and (source is not None or reference is not None):
        raise cfg.ConfigError("give --data FILE, or --source FILE and --reference FILE, not both")
    if data is not None:
        if beam is not None or length_penalty is not None:
            raise cfg.ConfigError("--beam and --length-penalty decode translations: they go with --source")
        return _score_file(checkpoint, Path(data))
    if source is None or reference is None:
        raise cfg.ConfigError("give --source FILE and --reference FILE (a translation run), "
                              "or --data FILE (a classifier or a language model)")
    return _bleu(checkpoint, Path(source), Path(reference), beam, length_penalty)


def _bleu(checkpoint: PathLike, source: Path, reference: Path, beam: Optional[int],
          length_penalty: Optional[float]) -> dict[str, Any]:
    from taa.data import read_parallel
    from taa.tasks.translation import bleu_scores
    from taa.tasks.translation import translate as run_translation

    pairs = read_parallel(source, reference)
    model, tokenizer, recipe = _load_translator(checkpoint)
    settings = _decoding(recipe, beam=beam, length_penalty=length_penalty)
    hypotheses = run_translation(model, tokenizer, [s for s, _ in pairs], beam=settings.beam,
                                 length_penalty=settings.length_penalty, max_extra=settings.max_extra)
    return {**bleu_scores(hypotheses, [r for _, r in pairs]), "sentences": len(pairs), "beam": settings.beam,
            "length_penalty": settings.length_penalty}


def _score_file(checkpoint: PathLike, data: Path) -> dict[str, Any]:
    """``score_file`` of the checkpoint's task module (found in the registry)."""
    pretrained = load(checkpoint)
    for task in tasks_of(pretrained):
        score_file = getattr(importlib.import_module(registry.task(task).module), "score_file", None)
        if score_file is not None:
            return score_file(pretrained, data)
    scored = [spec.name for spec in registry.tasks() if hasattr(importlib.import_module(spec.module), "score_file")]
    hint = " (a translation run: give --source and --reference)" if "translation" in tasks_of(pretrained) else ""
    raise cfg.ConfigError(f"--data: {checkpoint} is {_what(pretrained)}; --data scores a model of the tasks "
                          f"{', '.join(scored)}{hint}")


# --------------------------------------------------------------------------------------
# taa generate
# --------------------------------------------------------------------------------------

GENERATE_NEW_TOKENS = 50  # taa generate's new tokens for a decoder-only model


def generate(checkpoint: PathLike, *, prompt: Optional[str] = None, prompt_ids: Optional[str | Sequence[int]] = None,
             max_new_tokens: Optional[int] = None, sample: Optional[bool] = None, temperature: Optional[float] = None,
             top_k: Optional[int] = None, top_p: Optional[float] = None, beam: Optional[int] = None,
             length_penalty: Optional[float] = None, seed: Optional[int] = None, dtype: str = "float32",
             stream: Optional[Callable[[str], None]] = None,
             notify: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Continue a prompt (a decoder-only model) or generate from a source (an encoder-decoder)
    with a model whose family generates text (:mod:`taa.registry`).

    Decodes as the checkpoint says (:func:`taa.decoding.decoding_defaults`) unless an option
    says otherwise; a sampling option (``temperature``, ``top_k``, ``top_p``) samples.
    ``prompt_ids``: token ids, a list or a text ("464 3290"). ``stream(text)`` receives the
    output for display as it is produced (a text prompt of a decoder-only model first; beam
    search gives its text at the end), ending with a newline. ``notify(line)`` receives one
    line before decoding when the prompt and the new tokens pass the model's context (default:
    a warning). Returns ``{"tokens", "text", "prompt_tokens"}`` (``text``: None without a tokenizer).
    """
    sampling_options = any(option is not None for option in (temperature, top_k, top_p))
    if (prompt is None) == (prompt_ids is None):
        raise cfg.ConfigError("give the prompt as --prompt TEXT or as --prompt-ids \"ID ID ...\" (one of them)")
    if sampling_options and beam is not None and beam > 1:
        raise cfg.ConfigError("--beam samples nothing: use --beam with no --temperature/--top-k/--top-p")
    if sampling_options and sample is False:
        raise cfg.ConfigError("--no-sample samples nothing: use it with no --temperature/--top-k/--top-p")
    if sample and beam is not None and beam > 1:
        raise cfg.ConfigError("--beam samples nothing: use --beam with no --sample")
    pretrained = load(checkpoint, dtype)
    if not registry.family_of_architecture(pretrained.architecture).generates_text:
        generating = ", ".join(family.name for family in registry.families() if family.generates_text)
        raise cfg.ConfigError(f"{checkpoint}: a {pretrained.architecture} does not generate text "
                              f"(taa generate needs a model of one of the families {generating})")
    ids = _prompt_ids(pretrained, checkpoint, prompt, prompt_ids)

    # The checkpoint's settings, an option given in place of its field. Sampling and beam
    # search exclude each other: asking for one turns the other off.
    if sampling_options:
        sample = True
    elif sample is None:  # not said: no sampling when a beam is asked for, else the checkpoint's
        sample = _decoding(pretrained).sample and (beam is None or beam == 1)
    settings = _decoding(pretrained, sample=sample, beam=1 if sample else beam, length_penalty=length_penalty,
                         temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    return _decode(pretrained, ids, settings, max_new_tokens, shown_prompt=prompt, stream=stream,
                   notify=notify or _warn)


def _prompt_ids(pretrained, checkpoint: PathLike, prompt: Optional[str],
                prompt_ids: Optional[str | Sequence[int]]) -> list[int]:
    """The prompt's token ids (an encoder-decoder's source with what its tokenizer adds)."""
    from taa.text import encode_text
    from taa.torch.hub import vocab_size

    if prompt_ids is not None:
        ids = _parse_ids(prompt_ids, vocab_size(pretrained))
    elif pretrained.tokenizer is None:
        raise cfg.ConfigError(f"{checkpoint} has no tokenizer: give the prompt as --prompt-ids \"ID ID ...\"")
    else:
        ids = encode_text(pretrained.tokenizer, prompt, source=pretrained.is_encoder_decoder)
    if not ids and not pretrained.is_encoder_decoder and getattr(pretrained.config, "bos_id", None) is not None:
        ids = [pretrained.config.bos_id]  # an empty prompt: start from the start token
    if not ids:
        raise cfg.ConfigError("the prompt is empty: give at least one token")
    return ids


def _parse_ids(given: str | Sequence[int], vocab_size: int) -> list[int]:
    try:
        ids = [int(token) for token in (given.replace(",", " ").split() if isinstance(given, str) else given)]
    except ValueError:
        raise cfg.ConfigError(
            f"--prompt-ids {given!r}: give token ids separated by spaces, e.g. \"464 3290\"") from None
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise cfg.ConfigError(f"--prompt-ids: {bad} outside the model's vocabulary of {vocab_size}")
    return ids


def _warn(line: str) -> None:
    import warnings

    warnings.warn(line, stacklevel=3)


def _within_context(prompt_length: int, max_new_tokens: Optional[int], encoder_decoder: bool, beam: int,
                    limit: Optional[int], notify: Callable[[str], None]) -> Optional[int]:
    """``max_new_tokens``, after one line to ``notify`` when it passes the model's context:
    a decoder-only model slides its context past it, an encoder-decoder stops at its limit
    (beam search past the context is an error: ``decode`` raises it)."""
    if limit is None or max_new_tokens is None:
        return max_new_tokens  # None: an encoder-decoder's limit is capped by the decoder
    if encoder_decoder and max_new_tokens > limit:
        notify(f"{max_new_tokens} new tokens pass the decoder's {limit} positions (max_length): stopping at {limit}")
        return limit
    if not encoder_decoder and prompt_length + max_new_tokens > limit and beam == 1:
        notify(f"{prompt_length} prompt + {max_new_tokens} new tokens pass the model's context of {limit} tokens "
               f"(max_length): past it each new token sees only the last {limit} tokens, without the KV cache")
    return max_new_tokens


class _TextStream:
    """Passes generated text on as it comes: decodes all tokens so far and gives what is new
    (a byte-level BPE may need several tokens for one character: those wait)."""

    def __init__(self, decode: Callable[[list[int]], str], show: Callable[[str], None]) -> None:
        self.decode, self.show, self.ids, self.shown = decode, show, [], ""

    def __call__(self, tokens) -> None:
        self.ids.append(int(tokens[0]))
        text = self.decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.shown):
            return  # an unfinished character, or a tokenizer that rewrote earlier text: wait
        self.show(text[len(self.shown):])
        self.shown = text

    def finish(self, text: str) -> None:
        """Give the rest of the final text (whole, on a new line, if earlier text changed)."""
        self.show(text[len(self.shown):] if text.startswith(self.shown) else "\n" + text)
        self.shown = text


def _decode(pretrained, ids: list[int], settings, max_new_tokens: Optional[int], *, shown_prompt: Optional[str],
            stream: Optional[Callable[[str], None]], notify: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from taa.text import decode_tokens
    from taa.torch.decoding_steps import max_positions
    from taa.torch.generate import decode

    tokenizer, encoder_decoder = pretrained.tokenizer, pretrained.is_encoder_decoder
    if max_new_tokens is None and not encoder_decoder:
        max_new_tokens = GENERATE_NEW_TOKENS
    max_new_tokens = _within_context(len(ids), max_new_tokens, encoder_decoder, settings.beam,
                                     max_positions(pretrained.model), notify)

    def text_of(new_ids: list[int]) -> str:
        return decode_tokens(tokenizer, new_ids, target=encoder_decoder)

    streamer = None
    if stream is not None and settings.beam == 1:  # beam search knows its answer only at the end
        streamer = _TextStream(text_of, stream) if tokenizer is not None else (
            lambda tokens: stream(f"{int(tokens[0])} "))
        if tokenizer is not None and not encoder_decoder and shown_prompt is not None:
            stream(shown_prompt)  # the continuation follows the prompt
    try:
        decoded = decode(pretrained.model, torch.tensor([ids]), None, settings, max_new_tokens=max_new_tokens,
                         streamer=streamer)
    except ValueError as error:  # e.g. beam search past the context
        raise cfg.ConfigError(str(error)) from None
    new_ids = decoded.tokens[0].tolist()
    text = text_of(new_ids) if tokenizer is not None else None
    if stream is not None:
        if isinstance(streamer, _TextStream):
            streamer.finish(text)
        elif streamer is None:
            stream(text if text is not None else " ".join(map(str, new_ids)))
        if not (text or "").endswith("\n"):
            stream("\n")  # the output ends with one newline
    return {"tokens": new_ids, "text": text, "prompt_tokens": ids}


# --------------------------------------------------------------------------------------
# taa viz attention
# --------------------------------------------------------------------------------------


def attention_weights(checkpoint: PathLike, *, sentence: str) -> dict[str, Any]:
    """A translation run's greedy translation of ``sentence`` (as :func:`translate` with
    ``beam=1``) and every attention layer's weights while reading it: ``{"translation",
    "source_tokens", "target_tokens", "weights"}``, ``weights[name]`` (heads, queries, keys)
    as nested lists."""
    found = _attention(checkpoint, sentence)
    return {**found, "weights": {name: values.tolist() for name, values in found["weights"].items()}}


def plot_attention(checkpoint: PathLike, *, sentence: str, out: PathLike) -> dict[str, Any]:
    """Encoder self-, decoder self- and cross-attention for ``sentence``, per layer and head,
    as a PNG at ``out``: ``{"translation", "out"}``."""
    try:
        from taa.plots import plot_attention as plot
    except ImportError:
        raise cfg.ConfigError("plots need matplotlib: pip install 'taa[eval]'") from None
    found = _attention(checkpoint, sentence)
    plot(found["weights"], found["source_tokens"], found["target_tokens"], out)
    return {"translation": found["translation"], "out": str(out)}


def _attention(checkpoint: PathLike, sentence: str) -> dict[str, Any]:
    import torch

    from taa.tasks.translation import translate as run_translation
    from taa.torch.attention import capture_attention

    model, tokenizer, recipe = _load_translator(checkpoint)
    settings = _decoding(recipe, beam=1)  # greedy, within the recipe's max_extra
    translation = run_translation(model, tokenizer, [sentence], beam=1, max_extra=settings.max_extra)[0]
    source_ids = tokenizer.encode_source(sentence)
    target_ids = tokenizer.encode_target(translation)[:-1]  # what the decoder reads: <s> + translation
    with torch.no_grad(), capture_attention(model) as recorded:
        model(torch.tensor([source_ids]), torch.tensor([target_ids]))
    return {
        "translation": translation,
        "source_tokens": tokenizer.tokens(sentence, "source") + ["</s>"],
        "target_tokens": ["<s>"] + tokenizer.tokens(translation, "target"),
        "weights": {name: values[0][0].numpy() for name, values in recorded.items() if values},  # (h, queries, keys)
    }
