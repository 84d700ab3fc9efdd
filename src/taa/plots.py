"""Pictures of a run: training curves and attention maps, written as PNG files.

Needs matplotlib (``pip install 'taa[eval]'``), imported only when a plot is drawn;
importing this module loads neither matplotlib nor torch. Figures are drawn on the
Agg canvas directly, without pyplot, so plotting never changes the backend of the
caller (a notebook keeps its inline plots) and never opens a window.

Arrays may be NumPy arrays, torch tensors (any device, any dtype, with or without
gradients) or anything ``np.asarray`` accepts.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

DPI = 100  # pixels per inch of the written PNG

# The three kinds of attention in an encoder-decoder (paper §3.2.3), in drawing order:
# kind -> (title, which tokens label the queries, which label the keys).
ATTENTION_KINDS = {
    "encoder": ("encoder self", "source", "source"),
    "decoder": ("decoder self", "target", "target"),
    "cross": ("cross", "target", "source"),
}


def _figure(width: float, height: float, layout: Optional[str] = "constrained"):
    """A matplotlib Figure (inches) on an Agg canvas: no pyplot, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return path


def _to_numpy(array: Any) -> np.ndarray:
    """NumPy float32 from a NumPy array, a torch tensor (bfloat16, CUDA, requires_grad) or a list."""
    for method in ("detach", "cpu", "float"):  # torch only: NumPy arrays have none of these
        if callable(getattr(array, method, None)):
            array = getattr(array, method)()
    if callable(getattr(array, "numpy", None)):
        array = array.numpy()
    return np.asarray(array, dtype=np.float32)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------------------


def plot_training_curves(
    history: Sequence[Sequence[float]],
    evaluations: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    title: str = "training",
    dpi: int = DPI,
) -> Path:
    """Training loss and learning rate against step; below, each validation metric.

    Args:
        history: ``(step, train loss, learning rate)`` per log interval
            (``TrainResult.history``).
        evaluations: one dict per validation, each with ``"step"`` (``TrainResult.evaluations``);
            may be empty. Metrics named ``*loss`` share the training loss's axes; every other
            number (``val_bleu``, ``exact_match``, ...) gets a panel of its own.
        path: the PNG to write (folders are made).

    Returns the path written.
    """
    if len(history) == 0:
        raise ValueError("history is empty: there are no training steps to plot")
    for i, entry in enumerate(history):
        if len(entry) != 3:
            raise ValueError(f"history[{i}] = {entry!r}: expected (step, loss, learning rate)")
    steps, losses, rates = (np.asarray(column, dtype=np.float64) for column in zip(*history))

    series: dict[str, tuple[list[float], list[float]]] = {}  # metric -> (steps, values)
    for i, evaluation in enumerate(evaluations):
        if "step" not in evaluation:
            raise ValueError(f"evaluations[{i}] has no 'step' (keys: {', '.join(map(str, evaluation))})")
        for key, value in evaluation.items():
            if key != "step" and _is_number(value):
                series.setdefault(key, ([], []))
                series[key][0].append(float(evaluation["step"]))
                series[key][1].append(float(value))
    loss_like = [key for key in series if key.endswith("loss")]
    others = [key for key in series if not key.endswith("loss")]

    figure = _figure(7.0, 3.2 + 2.0 * len(others))
    axes = figure.subplots(1 + len(others), 1, sharex=True, squeeze=False)[:, 0]

    top = axes[0]
    lines = top.plot(steps, losses, color="C0", label="train loss")
    for n, key in enumerate(loss_like):
        lines += top.plot(*series[key], color=f"C{n + 1}", marker="o", label=key.replace("_", " "))
    top.set_ylabel("loss (per target token)")
    rate_axis = top.twinx()  # the learning rate has its own scale
    lines += rate_axis.plot(steps, rates, color="C7", linestyle="--", label="learning rate")
    rate_axis.set_ylabel("learning rate")
    rate_axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    top.legend(lines, [line.get_label() for line in lines], loc="upper right", fontsize="small")
    top.set_title(title)
    top.grid(alpha=0.3)

    for n, (axis, key) in enumerate(zip(axes[1:], others)):
        axis.plot(*series[key], color=f"C{n + len(loss_like) + 1}", marker="o")
        axis.set_ylabel(key.replace("_", " "))
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    return _save(figure, path, dpi)


# --------------------------------------------------------------------------------------
# Attention maps
# --------------------------------------------------------------------------------------


def attention_kind(name: str) -> str:
    """``encoder.layers.0.self_attention`` -> "encoder"; ``decoder.layers.1.cross_attention``
    -> "cross"; any other self-attention (a decoder, or a decoder-only model) -> "decoder".
    """
    parts = name.split(".")
    if any("cross" in part for part in parts):
        return "cross"
    return "encoder" if "encoder" in parts else "decoder"


def _layer(name: str) -> int:
    """The first number in a dotted module name: its layer (-1 when there is none)."""
    found = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return int(found.group(1)) if found else -1


def _heads(name: str, weights: Any) -> np.ndarray:
    """(h, q, k) from (h, q, k), (1, h, q, k) or a single head's (q, k)."""
    array = _to_numpy(weights)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    elif array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] == 0:
        raise ValueError(f"{name}: expected attention weights of shape (h, q, k), got {tuple(array.shape)}")
    return array


def _label(token: Any) -> str:
    return str(token).replace("$", r"\$")  # a lone "$" would start matplotlib mathtext


def plot_attention(
    weights: Mapping[str, Any],
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    path: str | Path,
    *,
    title: Optional[str] = None,
    dpi: int = DPI,
) -> Path:
    """Attention weights as heat maps: a row per layer, a column per head.

    Encoder self-attention comes first (queries and keys are source tokens), then
    decoder self-attention (target tokens), then cross-attention (target queries over
    source keys). One sentence at a time::

        with torch.no_grad(), capture_attention(model) as recorded:
            model(source_ids, target_ids)                                   # batch of 1
        weights = {name: calls[0][0] for name, calls in recorded.items() if calls}
        plot_attention(weights, source_tokens, target_tokens, "attention.png")

    Args:
        weights: module name -> weights (h, q, k); the kind comes from the name (see
            :func:`attention_kind`), the layer from its first number.
        source_tokens: one label per source position (encoder queries and keys, cross keys).
        target_tokens: one label per decoder position (decoder queries and keys, cross queries).
        path: the PNG to write (folders are made).

    Returns the path written. A weight whose shape does not match the tokens raises a
    ValueError naming the module and the mismatch.
    """
    if not weights:
        raise ValueError("weights is empty: there is no attention to plot")
    tokens = {"source": list(source_tokens), "target": list(target_tokens)}
    sections: dict[str, list[tuple[str, np.ndarray]]] = {kind: [] for kind in ATTENTION_KINDS}
    for name, value in weights.items():
        kind = attention_kind(name)
        heads = _heads(name, value)  # (h, q, k)
        _, query_side, key_side = ATTENTION_KINDS[kind]
        for side, length, axis in ((query_side, heads.shape[1], "queries"), (key_side, heads.shape[2], "keys")):
            if length != len(tokens[side]):
                raise ValueError(
                    f"{name} ({ATTENTION_KINDS[kind][0]}-attention) has {length} {axis} but "
                    f"{side}_tokens has {len(tokens[side])} tokens (weights shape (h, q, k) = {tuple(heads.shape)})"
                )
        sections[kind].append((name, heads))
    kinds = [kind for kind in ATTENTION_KINDS if sections[kind]]
    for kind in kinds:
        sections[kind].sort(key=lambda item: (_layer(item[0]), item[0]))

    # A fixed layout in inches (a layout engine takes seconds for a 6-layer, 8-head grid).
    labels = {side: [_label(t) for t in tokens[side]] for side in tokens}
    longest = max(len(tokens["source"]), len(tokens["target"]), 1)
    n_columns = max(heads.shape[0] for kind in kinds for _, heads in sections[kind])
    panel = float(np.clip(0.4 + 0.18 * longest, 1.2, 4.0))  # one heat map
    font = float(np.clip(100 / longest, 4, 9))  # points
    widest = max((len(t) for t in labels["source"] + labels["target"]), default=1)
    label_inches = 0.15 + 0.6 * widest * font / 72  # a row of token labels, upright or rotated
    gap, header, left, right = 0.08, 0.3, 0.55 + label_inches, 1.0
    top = 0.5 if title else 0.1
    width = left + n_columns * (panel + gap) + right
    height = top + sum(header + len(sections[kind]) * (panel + gap) + label_inches for kind in kinds)
    figure = _figure(width, height, layout=None)

    def place(x: float, y: float, w: float, h: float):  # inches from the top left corner
        return figure.add_axes((x / width, 1 - (y + h) / height, w / width, h / height))

    image, y = None, top
    for kind in kinds:
        name_of_kind, query_side, key_side = ATTENTION_KINDS[kind]
        y += header
        for r, (name, heads) in enumerate(sections[kind]):
            last_row = r == len(sections[kind]) - 1
            for c in range(heads.shape[0]):
                axis = place(left + c * (panel + gap), y, panel, panel)
                image = axis.imshow(heads[c], vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto",
                                    interpolation="nearest")  # (q, k): a row per query
                # token labels only on the left and at the bottom of each section
                if last_row:
                    axis.set_xticks(range(heads.shape[2]), labels[key_side], rotation=90, fontsize=font)
                else:
                    axis.set_xticks([])
                if c == 0:
                    axis.set_yticks(range(heads.shape[1]), labels[query_side], fontsize=font)
                    layer = _layer(name)
                    axis.set_ylabel(f"{name_of_kind}\n" + (f"layer {layer}" if layer >= 0 else name),
                                    fontsize="small")
                else:
                    axis.set_yticks([])
                axis.tick_params(length=0)
                if r == 0:
                    axis.set_title(f"head {c}", fontsize="small")
            y += panel + gap
        y += label_inches
    bar = place(left + n_columns * (panel + gap) + 0.15, top + header, 0.15, min(4.0, height - top - header - 0.2))
    figure.colorbar(image, cax=bar, label="attention weight")
    if title:
        figure.suptitle(title, y=1 - 0.1 / height, va="top")
    return _save(figure, path, dpi)


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, *,
                   title: Optional[str] = None, dpi: int = DPI) -> Path:
    """A confusion matrix (``confusion[true][predicted]`` counts) as a heat map, the counts
    written in the cells, rows the true classes, columns the predicted ones."""
    counts = np.asarray(confusion, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(classes):
        raise ValueError(f"confusion of shape {counts.shape} for {len(classes)} classes: it should be square, "
                         f"a row and a column per class")
    k = len(classes)
    side = float(np.clip(0.45 * k + 1.5, 3.0, 14.0))
    figure = _figure(side + 1.0, side)
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues")
    labels = [_label(name) for name in classes]
    axes.set_xticks(range(k), labels, rotation=90 if max(map(len, labels), default=0) > 3 else 0)
    axes.set_yticks(range(k), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    font = float(np.clip(120 / max(k, 1), 4, 10))
    high = counts.max() if counts.size else 0
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                axes.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=font,
                          color="white" if counts[i, j] > high / 2 else "black")
    accuracy = np.trace(counts) / max(1, counts.sum())
    axes.set_title(title or f"accuracy {100 * accuracy:.2f}% of {counts.sum():,}")
    figure.colorbar(image, ax=axes, shrink=0.8)
    return _save(figure, path, dpi)


def plot_image_attention(image: Any, attention: Any, path: str | Path, *, title: Optional[str] = None,
                         dpi: int = DPI) -> Path:
    """An image (c, h, w) uint8 beside the same image under an attention map over its patch
    grid (rows, cols; e.g. the class token's attention rollout), scaled up to the image."""
    pixels = np.asarray(image)
    if pixels.ndim != 3:
        raise ValueError(f"image of shape {pixels.shape}: expected (channels, height, width)")
    grid = _to_numpy(attention)
    if grid.ndim != 2:
        raise ValueError(f"attention of shape {grid.shape}: expected (rows, cols) over the patch grid")
    grey = pixels.shape[0] == 1
    shown = pixels[0] if grey else pixels.transpose(1, 2, 0)
    height, width = shown.shape[:2]
    figure = _figure(7.0, 3.6)
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for axes in (left, right):
        axes.imshow(shown, cmap="gray" if grey else None, extent=(0, width, height, 0), interpolation="nearest")
        axes.set_xticks([])
        axes.set_yticks([])
    overlay = right.imshow(grid, cmap="inferno", alpha=0.6, extent=(0, width, height, 0), interpolation="nearest")
    left.set_title("image")
    right.set_title("class token's attention (rollout)")
    figure.colorbar(overlay, ax=right, shrink=0.8)
    if title:
        figure.suptitle(title)
    return _save(figure, path, dpi)


def plot_return_curve(targets: Sequence[float], returns: Sequence[float], spreads: Sequence[float],
                      path: str | Path, *, title: Optional[str] = None, dpi: int = DPI) -> Path:
    """A return-conditioned policy's achieved return (mean, with one standard deviation
    shaded) against the target return it was asked for, beside the line achieved = target:
    a policy that follows its target rises with it."""
    x, y, spread = (np.asarray(v, dtype=np.float64) for v in (targets, returns, spreads))
    if not (x.ndim == y.ndim == spread.ndim == 1 and len(x) == len(y) == len(spread)) or len(x) < 2:
        raise ValueError(f"{len(x)} targets, {len(y)} returns, {len(spread)} spreads: give two or more, "
                         f"as many of each")
    order = np.argsort(x)
    x, y, spread = x[order], y[order], spread[order]
    figure = _figure(5.5, 4.2)
    axes = figure.add_subplot()
    low, high = min(x.min(), (y - spread).min()), max(x.max(), (y + spread).max())
    axes.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=1, label="achieved = target")
    axes.fill_between(x, y - spread, y + spread, alpha=0.25, color="tab:blue")
    axes.plot(x, y, marker="o", color="tab:blue", label="achieved (mean, ±1 std)")
    axes.set_xlabel("target return")
    axes.set_ylabel("achieved return")
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(alpha=0.3)
    if title:
        axes.set_title(title, fontsize=9)
    return _save(figure, path, dpi)
