"""``taa viz attention``: a translation run's attention weights, as numbers or a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taa import config as cfg
from taa.api._common import PathLike, _check_sentences, _decoding, _load_translator, _source_too_long, load
from taa.folders import check_writable_file


# --------------------------------------------------------------------------------------
# taa viz attention
# --------------------------------------------------------------------------------------


def attention_weights(checkpoint: PathLike, *, sentence: str, device: str = "auto") -> dict[str, Any]:
    """A translation run's greedy translation of ``sentence`` (as :func:`translate` with
    ``beam=1``) and every attention layer's weights while reading it: ``{"translation",
    "source_tokens", "target_tokens", "weights"}``, ``weights[name]`` (heads, queries, keys)
    as nested lists. ``device``: where the model runs (auto: a GPU when there is one)."""
    found = _attention(checkpoint, sentence, device)
    return {**found, "weights": {name: values.tolist() for name, values in found["weights"].items()}}


def plot_attention(checkpoint: PathLike, *, sentence: str, out: PathLike, device: str = "auto") -> dict[str, Any]:
    """Encoder self-, decoder self- and cross-attention for ``sentence``, per layer and head,
    as a PNG at ``out``: ``{"translation", "out"}``. A Vision Transformer's checkpoint reads
    ``sentence`` as an image file: :func:`plot_image_attention`."""
    check_png(out)
    try:
        from taa.plots import plot_attention as plot
    except ImportError:
        raise cfg.ConfigError("plots need matplotlib: pip install 'taa[eval]'") from None
    if _is_vision(checkpoint):
        return plot_image_attention(checkpoint, image=sentence, out=out, device=device)
    found = _attention(checkpoint, sentence, device)
    plot(found["weights"], found["source_tokens"], found["target_tokens"], out)
    return {"translation": found["translation"], "out": str(out)}


def check_png(out: PathLike) -> None:
    """``--out`` is a PNG file that can be written, before anything loads."""
    check_writable_file(out, "--out")
    if Path(out).suffix.lower() != ".png":  # never over a checkpoint's weights or any other file
        raise cfg.ConfigError(f"--out {out}: the picture is a PNG file; give a name ending in .png")


def _is_vision(checkpoint: PathLike) -> bool:
    """Whether a folder holds a Vision Transformer, read from its recipe, model.yaml or
    config.json (not its weights); a folder that is none of these is not (the text path
    says what is wrong with it)."""
    from taa import folders
    from taa.convert.hf import folder_family

    try:
        kind = folders.folder_kind(checkpoint)
        if kind == folders.TAA_RUN:
            return isinstance(folders.load_recipe(checkpoint).model, cfg.ViTConfig)
        if kind == folders.HUGGING_FACE:
            return folder_family(checkpoint) == "vit"
        return isinstance(folders.load_model_description(checkpoint)[0], cfg.ViTConfig)
    except (cfg.ConfigError, OSError):  # CheckpointError and ConversionError are ConfigErrors
        return False


def plot_image_attention(checkpoint: PathLike, *, image: str, out: PathLike, device: str = "auto") -> dict[str, Any]:
    """A Vision Transformer's class-token attention rollout over ``image`` (a PNG or JPEG),
    drawn over the image as a PNG at ``out``: ``{"label", "out"}`` (``label``: the predicted
    class of a classifier, else None)."""
    from taa.plots import plot_image_attention as plot
    from taa.tasks.image_classification import attention_map

    check_png(out)
    pretrained = load(checkpoint, device=device)
    pixels, rollout, label = attention_map(pretrained, image)
    plot(pixels, rollout, out, title=f"{Path(image).name}: {label}" if label is not None else Path(image).name)
    return {"label": label, "out": str(out)}


def _attention(checkpoint: PathLike, sentence: str, device: str) -> dict[str, Any]:
    import torch

    from taa.tasks.translation import translate as run_translation
    from taa.torch.attention import capture_attention
    from taa.torch.devices import model_device

    (sentence,) = _check_sentences([sentence])  # text, and no longer than the encoder reads
    model, tokenizer, recipe = _load_translator(checkpoint, device)
    source_ids = tokenizer.encode_source(sentence)
    _source_too_long(model.config, [len(source_ids)], lambda _: "the sentence")
    settings = _decoding(recipe, beam=1)  # greedy, within the recipe's max_extra
    translation = run_translation(model, tokenizer, [sentence], beam=1, max_extra=settings.max_extra)[0]
    target_ids = tokenizer.encode_target(translation)[:-1]  # what the decoder reads: <s> + translation
    where = model_device(model)
    with torch.no_grad(), capture_attention(model) as recorded:
        model(torch.tensor([source_ids], device=where), torch.tensor([target_ids], device=where))
    return {
        "translation": translation,
        "source_tokens": tokenizer.tokens(sentence, "source") + ["</s>"],
        "target_tokens": ["<s>"] + tokenizer.tokens(translation, "target"),
        # (heads, queries, keys) of each attention layer, as NumPy arrays on the CPU
        "weights": {name: values[0][0].cpu().numpy() for name, values in recorded.items() if values},
    }
