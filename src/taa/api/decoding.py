"""``taa translate``, ``taa evaluate``, ``taa generate``: decoding, scoring, streaming."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

from taa import config as cfg
from taa import registry
from taa.api._common import Notify, PathLike, _check_sentences, _check_translation_tokenizer, _decoding
from taa.api._common import _load_translator, _source_too_long, _warn, _warn_truncated, _what, load, port_module
from taa.api._common import tasks_of, to_numpy


# --------------------------------------------------------------------------------------
# taa translate, taa evaluate
# --------------------------------------------------------------------------------------


def translate(checkpoint: PathLike, *, sentences: Sequence[str], beam: Optional[int] = None,
              max_len: Optional[int] = None, length_penalty: Optional[float] = None,
              notify: Optional[Notify] = None, device: str = "auto", framework: str = "torch") -> list[str]:
    """Translations of ``sentences`` by a translation run, decoded as its final test
    evaluation was (its recipe's beam, length penalty and max_extra) unless an option says
    otherwise; ``max_len`` caps every output at that many tokens (the decoder's positions
    cap it too: ``notify(line)`` says so, default a warning). ``device``: where the model
    decodes (auto: a GPU when there is one; cpu, cuda, cuda:N, mps). ``framework``: torch,
    or a port (``"keras"``, ``"flax"``), which decodes alike (:func:`_translate_port`).

    A sentence longer than the encoder reads (``model.max_length`` tokens) is refused,
    naming it: a translation of part of it would pass for the whole.
    """
    sentences = _check_sentences(sentences)
    model, tokenizer, recipe = _load_translator(checkpoint, device, framework)
    _source_too_long(model.config, [len(tokenizer.encode_source(s)) for s in sentences],
                     lambda index: f"sentence {index + 1}")
    positions = model.config.max_length  # the start token and the decoder's new tokens
    if max_len is not None and max_len > positions:
        (notify or _warn)(f"--max-len {max_len} passes the decoder's {positions} positions (max_length): "
                          f"outputs stop at {positions}")
        max_len = positions
    settings = _decoding(recipe, beam=beam, length_penalty=length_penalty)
    return _translations(model, tokenizer, sentences, settings, max_len, framework)


def _translations(model, tokenizer, sentences: Sequence[str], settings, max_length: Optional[int] = None,
                  framework: str = "torch") -> list[str]:
    """Translations of ``sentences`` decoded as ``settings`` say, in ``framework``."""
    if framework != "torch":
        return _translate_port(model, tokenizer, sentences, settings, max_length, framework)
    from taa.tasks.translation import translate as run_translation

    return run_translation(model, tokenizer, sentences, beam=settings.beam,
                           length_penalty=settings.length_penalty, max_extra=settings.max_extra, max_length=max_length)


def _translate_port(model, tokenizer, sentences: Sequence[str], settings, max_length: Optional[int],
                    framework: str, batch_size: int = 128) -> list[str]:
    """:func:`taa.tasks.translation.translate` on a port (Keras, Flax): batched by length, in
    input order, each batch decoded by the port's ``generate.decode`` as ``settings`` say;
    ``max_length`` caps every output at that many tokens, the start token included."""
    import numpy as np

    from taa.data.batching import in_length_order, pad

    decode = port_module(framework, "generate").decode
    new_tokens = None if max_length is None else max_length - 1

    def decode_rows(rows: list[list[int]]) -> list[list[int]]:  # <s>, tokens, </s>, padding
        source = pad(rows, tokenizer.pad_id).astype(np.int32)  # (b, m)
        decoded = decode(model, source, None, settings, max_new_tokens=new_tokens)
        return to_numpy(decoded.sequences(), framework).tolist()

    encoded = [tokenizer.encode_source(s) for s in sentences]
    return [tokenizer.decode_target(ids) for ids in in_length_order(encoded, batch_size, decode_rows)]


def evaluate(checkpoint: PathLike, *, source: Optional[PathLike] = None, reference: Optional[PathLike] = None,
             data: Optional[PathLike] = None, beam: Optional[int] = None,
             length_penalty: Optional[float] = None, notify: Optional[Notify] = None,
             device: str = "auto", framework: str = "torch", plot: Optional[PathLike] = None,
             env: Optional[str] = None, episodes: Optional[int] = None, seed: int = 0,
             target_returns: Sequence[float] = ()) -> dict[str, Any]:
    """Score a checkpoint on a file, the model on ``device`` (auto: a GPU when there is one)
    in ``framework`` (torch, or a port: ``keras``, ``flax``); what is scored follows its task
    (:mod:`taa.registry`):

    - a translation run, ``source`` and ``reference``: sacreBLEU (cased and lower-cased) and
      chrF of its translations, decoded as :func:`translate` decodes;
    - a classifier, ``data`` (``sentence<TAB>label`` or ``label sentence`` lines): accuracy,
      mean loss and per-label precision, recall and F1;
    - a language model, ``data`` (a text file): mean loss per token and perplexity;
    - an image classifier, ``data`` (a folder holding an IDX images/labels pair, a CIFAR-10
      binary batch file, or a folder of class subfolders of images): accuracy, examples,
      mean loss and the confusion matrix, drawn as a PNG at ``plot`` when given;
    - a Decision Transformer, ``env`` (a gymnasium environment; "" or None with ``episodes``:
      the run's own): it plays ``episodes`` episodes (default 100), episode i seeded ``seed +
      i``, for each of ``target_returns`` (none given: the run's target, the data's best
      return): ``mean_return``, ``std_return``, ``episodes`` and more; several targets give
      ``{"env", "results": [...]}`` and, with ``plot``, the curve of target against return.

    Every task module with a ``score_file(pretrained, path)`` function scores ``data``.
    An empty file is refused, and so are a source and a reference of different lengths
    and a source sentence longer than the encoder reads (as :func:`translate` refuses it);
    a classifier cuts a sentence longer than it reads to its length, as in training, and
    ``notify(line)`` (default: a warning) says how many it cut.
    """
    if data is not None and (source is not None or reference is not None):
        raise cfg.ConfigError("give --data FILE, or --source FILE and --reference FILE, not both")
    if env is not None or episodes is not None or target_returns:
        if data is not None or source is not None or reference is not None or beam is not None:
            raise cfg.ConfigError("--env plays a Decision Transformer in an environment: it goes without "
                                  "--data, --source, --reference and --beam")
        return _play(checkpoint, env or None, 100 if episodes is None else episodes, seed, target_returns, plot,
                     device, framework)
    if plot is not None:
        from taa.api.viz import check_png

        if data is None:
            raise cfg.ConfigError("--plot draws the confusion matrix of an image classifier: it goes with --data")
        check_png(plot)
    if data is not None:
        if beam is not None or length_penalty is not None:
            raise cfg.ConfigError("--beam and --length-penalty decode translations: they go with --source")
        scores = _score_file(checkpoint, Path(data), notify or _warn, device, framework)
        if plot is not None:
            if "confusion" not in scores:
                raise cfg.ConfigError(f"--plot: {checkpoint} is no image classifier; --plot draws an image "
                                      f"classifier's confusion matrix")
            from taa.plots import plot_confusion

            plot_confusion(scores["confusion"], scores["classes"], plot)
            scores = {**scores, "plot": str(plot)}
        return scores
    if source is None or reference is None:
        raise cfg.ConfigError("give --source FILE and --reference FILE (a translation run), "
                              "or --data FILE (a classifier or a language model)")
    return _bleu(checkpoint, Path(source), Path(reference), beam, length_penalty, device, framework)


def _play(checkpoint: PathLike, env: Optional[str], episodes: int, seed: int, targets: Sequence[float],
          plot: Optional[PathLike], device: str, framework: str) -> dict[str, Any]:
    """A Decision Transformer plays its environment (:func:`taa.tasks.offline_rl.play_checkpoint`)."""
    if episodes <= 0:
        raise cfg.ConfigError(f"--episodes {episodes}: play at least one episode")
    if plot is not None:
        from taa.api.viz import check_png

        if len(targets) < 2:
            raise cfg.ConfigError("--plot draws achieved against target return: give two or more --target-return")
        check_png(plot)
    pretrained = load(checkpoint, device=device, framework=framework)
    if pretrained.architecture != "DecisionTransformer":
        raise cfg.ConfigError(f"--env: {checkpoint} is {_what(pretrained)}; --env plays a Decision Transformer")
    from taa.tasks.offline_rl import play_checkpoint

    results = play_checkpoint(pretrained, env, episodes, seed, list(targets) or [None])
    if len(results) == 1:
        return {"task": "offline_rl", **results[0]}
    scores = {"task": "offline_rl", "env": results[0]["env"], "episodes": episodes, "seed": seed, "results": results}
    if plot is not None:
        from taa.plots import plot_return_curve

        plot_return_curve([r["target_return"] for r in results], [r["mean_return"] for r in results],
                          [r["std_return"] for r in results], plot, title=f"{results[0]['env']}: {episodes} "
                          f"episodes a target, seed {seed}")
        scores["plot"] = str(plot)
    return scores


def _bleu(checkpoint: PathLike, source: Path, reference: Path, beam: Optional[int],
          length_penalty: Optional[float], device: str, framework: str = "torch") -> dict[str, Any]:
    from taa.data import read_parallel
    from taa.tasks.translation import bleu_scores

    pairs = read_parallel(source, reference)
    model, tokenizer, recipe = _load_translator(checkpoint, device, framework)
    _source_too_long(model.config, [len(tokenizer.encode_source(s)) for s, _ in pairs],
                     lambda index: f"{source}, line {index + 1}")
    settings = _decoding(recipe, beam=beam, length_penalty=length_penalty)
    hypotheses = _translations(model, tokenizer, [s for s, _ in pairs], settings, framework=framework)
    return {**bleu_scores(hypotheses, [r for _, r in pairs]), "sentences": len(pairs), "beam": settings.beam,
            "length_penalty": settings.length_penalty}


def _score_file(checkpoint: PathLike, data: Path, notify: Notify, device: str,
                framework: str = "torch") -> dict[str, Any]:
    """``score_file`` of the checkpoint's task module (found in the registry), in ``framework``."""
    pretrained = load(checkpoint, device=device, framework=framework)
    if "classification" in tasks_of(pretrained) and hasattr(pretrained.tokenizer, "encode_batch"):
        from taa.data.sst2 import read_labelled_file
        from taa.tasks.classification import label_names

        rows = read_labelled_file(data, pretrained.config.num_labels, label_names(pretrained) or ())
        _warn_truncated(pretrained.tokenizer, [sentence for sentence, _ in rows], notify, f"{data}: ")
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
# The most new tokens taa generate takes: a decoder-only model keeps every token past its
# context (8 bytes each, per beam), and more would run for days on a CPU.
GENERATE_MAX_NEW_TOKENS = 1_000_000


def generate(checkpoint: PathLike, *, prompt: Optional[str] = None, prompt_ids: Optional[str | Sequence[int]] = None,
             max_new_tokens: Optional[int] = None, sample: Optional[bool] = None, temperature: Optional[float] = None,
             top_k: Optional[int] = None, top_p: Optional[float] = None, beam: Optional[int] = None,
             length_penalty: Optional[float] = None, seed: Optional[int] = None, dtype: str = "float32",
             stream: Optional[Callable[[str], None]] = None,
             notify: Optional[Callable[[str], None]] = None, device: str = "auto",
             framework: str = "torch") -> dict[str, Any]:
    """Continue a prompt (a decoder-only model) or generate from a source (an encoder-decoder)
    with a model whose family generates text (:mod:`taa.registry`).

    Decodes as the checkpoint says (:func:`taa.decoding.decoding_defaults`) unless an option
    says otherwise; a sampling option (``temperature``, ``top_k``, ``top_p``) samples.
    ``prompt_ids``: token ids, a list or a text ("464 3290"). ``stream(text)`` receives the
    output for display as it is produced (a text prompt of a decoder-only model first; beam
    search gives its text at the end), ending with a newline. ``notify(line)`` receives one
    line before decoding when the prompt and the new tokens pass the model's context (default:
    a warning). ``device``: where the model decodes (auto: a GPU when there is one).
    ``framework``: torch, or a port (``"keras"``, ``"flax"``: the same search, so greedy and
    beam search give torch's tokens; sampling draws from the port's generator, so a seed
    repeats its own draw, not torch's). Returns ``{"tokens", "text", "prompt_tokens"}``
    (``text``: None without a tokenizer).
    """
    sampling_options = any(option is not None for option in (temperature, top_k, top_p))
    if max_new_tokens is not None and not 0 <= max_new_tokens <= GENERATE_MAX_NEW_TOKENS:
        raise cfg.ConfigError(f"--max-new-tokens {max_new_tokens:,}: give 0 to {GENERATE_MAX_NEW_TOKENS:,}")
    if prompt is not None:
        from taa.data.text import check_text  # (the data package imports NumPy: not for `import taa.api`)

        check_text(prompt, "--prompt")
    if (prompt is None) == (prompt_ids is None):
        raise cfg.ConfigError("give the prompt as --prompt TEXT or as --prompt-ids \"ID ID ...\" (one of them)")
    if sampling_options and beam is not None and beam > 1:
        raise cfg.ConfigError("--beam samples nothing: use --beam with no --temperature/--top-k/--top-p")
    if sampling_options and sample is False:
        raise cfg.ConfigError("--no-sample samples nothing: use it with no --temperature/--top-k/--top-p")
    if sample and beam is not None and beam > 1:
        raise cfg.ConfigError("--beam samples nothing: use --beam with no --sample")
    pretrained = load(checkpoint, dtype, device, framework)
    if not registry.family_of_architecture(pretrained.architecture).generates_text:
        generating = ", ".join(family.name for family in registry.families() if family.generates_text)
        raise cfg.ConfigError(f"{checkpoint}: a {pretrained.architecture} does not generate text "
                              f"(taa generate needs a model of one of the families {generating})")
    if "translation" in tasks_of(pretrained) and pretrained.recipe is not None:
        _check_translation_tokenizer(pretrained.tokenizer, checkpoint)
    ids = _prompt_ids(pretrained, checkpoint, prompt, prompt_ids)
    if pretrained.is_encoder_decoder:  # a source the encoder cannot read whole: refused, as by translate
        _source_too_long(pretrained.config, [len(ids)], lambda _: "--prompt" if prompt is not None else "--prompt-ids")

    # The checkpoint's settings, an option given in place of its field. Sampling and beam
    # search exclude each other: asking for one turns the other off.
    if sampling_options:
        sample = True
    elif sample is None:  # not said: no sampling when a beam is asked for, else the checkpoint's
        sample = _decoding(pretrained).sample and (beam is None or beam == 1)
    settings = _decoding(pretrained, sample=sample, beam=1 if sample else beam, length_penalty=length_penalty,
                         temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    return _decode(pretrained, ids, settings, max_new_tokens, shown_prompt=prompt, stream=stream,
                   notify=notify or _warn, framework=framework)


def _prompt_ids(pretrained, checkpoint: PathLike, prompt: Optional[str],
                prompt_ids: Optional[str | Sequence[int]]) -> list[int]:
    """The prompt's token ids (an encoder-decoder's source with what its tokenizer adds)."""
    from taa.hub import vocab_size
    from taa.text import encode_text

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
            stream: Optional[Callable[[str], None]], notify: Callable[[str], None],
            framework: str = "torch") -> dict[str, Any]:
    from taa.text import decode_tokens

    if framework != "torch":  # a port: numpy in, the port's arrays out
        import numpy as np

        max_positions = port_module(framework, "decoding_steps").max_positions
        decode = port_module(framework, "generate").decode

        def prompt_of(tokens: list[int]):
            return np.array([tokens], dtype=np.int32)  # (1, p)

        def new_ids_of(tokens) -> list[int]:
            return to_numpy(tokens, framework)[0].tolist()
    else:
        import torch

        from taa.torch.decoding_steps import max_positions
        from taa.torch.devices import model_device
        from taa.torch.generate import decode

        def prompt_of(tokens: list[int]):
            return torch.tensor([tokens], device=model_device(pretrained.model))  # (1, p)

        def new_ids_of(tokens) -> list[int]:
            return tokens[0].tolist()

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
        decoded = decode(pretrained.model, prompt_of(ids), None, settings, max_new_tokens=max_new_tokens,
                         streamer=streamer)
    except ValueError as error:  # e.g. beam search past the context
        raise cfg.ConfigError(str(error)) from None
    new_ids = new_ids_of(decoded.tokens)
    text = text_of(new_ids) if tokenizer is not None else None
    if stream is not None:
        if isinstance(streamer, _TextStream):
            streamer.finish(text)
        elif streamer is None:
            stream(text if text is not None else " ".join(map(str, new_ids)))
        if not (text or "").endswith("\n"):
            stream("\n")  # the output ends with one newline
    return {"tokens": new_ids, "text": text, "prompt_tokens": ids}
