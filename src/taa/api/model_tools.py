"""``taa models``, ``taa model-info``, ``taa convert``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from taa import config as cfg
from taa import registry
from taa.folders import check_no_live_run, check_writable_folder, held_model, replace_folder
from taa.api._common import PathLike, load


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
            out: PathLike, overwrite: bool = False) -> dict[str, Any]:
    """A Hugging Face folder to a taa model folder (``from_hf``), or a taa folder (a run or a
    converted model) to a Hugging Face folder (``to_hf``), written to ``out``; the tokenizer
    files travel along.

    ``out`` must be new or empty: a folder that holds anything is refused in one line (the
    new model's files would mix with what is there, and a taa run's ``recipe.yaml`` would
    still decide what the folder loads as), unless it holds a model and ``overwrite`` asks
    to replace it. The model is written into a staging folder first and takes the place of
    what ``out`` held once complete (:func:`taa.folders.replace_folder`): a failed
    conversion loses nothing and leaves no half-written model.

    Returns ``{"architecture", "parameters", "tokenizer", "source", "out"}`` (``tokenizer``:
    the tokenizer files copied).
    """
    if (from_hf is None) == (to_hf is None):
        raise cfg.ConfigError("give exactly one of --from-hf DIR and --to-hf DIR")
    check_writable_folder(out, "--out")  # before importing torch and reading any weights (an empty --out too)
    source, out = Path(from_hf if from_hf is not None else to_hf), Path(out)
    if out.resolve() == source.resolve():
        raise cfg.ConfigError(f"--out {out} is the folder being converted: write somewhere else")
    if out.resolve() in source.resolve().parents:  # replacing what --out holds would delete the source
        raise cfg.ConfigError(f"--out {out} holds the folder being converted ({source}): write somewhere else")
    check_no_live_run(out)  # a run writing there would lose its files
    _check_replaceable(out, overwrite)

    from taa.torch.convert.hf import load_hf_folder, save_hf_folder
    from taa.torch.hub import copy_tokenizer, hf_tokenizer, save_pretrained

    if from_hf is not None:
        model = load_hf_folder(source)
        replace_folder(out, lambda staging: save_pretrained(model, staging, tokenizer_from=source))
        copied = hf_tokenizer(source)  # its files, or the taa tokenizer --to-hf kept
    else:
        pretrained = load(source)
        model = pretrained.model
        copied = []

        def fill(staging: Path) -> None:
            save_hf_folder(model, staging)
            copied.extend(copy_tokenizer(pretrained, staging))

        replace_folder(out, fill)
    return {"architecture": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer": copied, "source": str(source), "out": str(out)}


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """``taa convert``'s ``--out`` must be new or empty; with ``overwrite``, it may hold a model."""
    if not out.is_dir() or next(out.iterdir(), None) is None:
        return
    held = held_model(out)
    if held is None:
        raise cfg.ConfigError(f"--out {out} is not empty and holds no model: give a new or empty folder")
    if not overwrite:
        raise cfg.ConfigError(f"--out {out} holds {held} already: give a new or empty folder, "
                              "or --overwrite to replace it")
