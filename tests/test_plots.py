"""taa.plots: training curves, attention maps and confusion matrices written as readable PNG files."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from taa.plots import attention_kind, plot_attention, plot_confusion, plot_image_attention  # noqa: E402
from taa.plots import plot_return_curve, plot_training_curves  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

HISTORY = [(step, 4.0 / step**0.5, 1e-3 * min(1.0, step / 30)) for step in range(10, 110, 10)]
EVALUATIONS = [
    {"step": 50, "val_loss": 2.1, "val_bleu": 12.5, "samples": "skipped: not a number"},
    {"step": 100, "val_loss": 1.7, "val_bleu": 19.0},
]
SOURCE = ["▁the", "▁cat", "$5", "</s>"]  # "$" must not start matplotlib mathtext
TARGET = ["<s>", "▁die", "▁Katze"]


def png_size(path):
    """(height, width) from the PNG header, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return height, width


def read_back(path):
    """The image as matplotlib reads it; its size must agree with the header."""
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[:2] == png_size(path)
    assert image.shape[2] in (3, 4) and image.std() > 0  # RGB(A) and not a blank canvas
    return image


def softmax_rows(rng, *shape):
    weights = rng.random(shape)
    return weights / weights.sum(-1, keepdims=True)


def attention_weights(layers=1, heads=2, source=len(SOURCE), target=len(TARGET)):
    rng = np.random.default_rng(0)
    weights = {}
    for layer in range(layers):
        weights[f"encoder.layers.{layer}.self_attention"] = softmax_rows(rng, heads, source, source)
        weights[f"decoder.layers.{layer}.self_attention"] = softmax_rows(rng, heads, target, target)
        weights[f"decoder.layers.{layer}.cross_attention"] = softmax_rows(rng, heads, target, source)
    return weights


# ---------------------------------------------------------------- training curves


def test_training_curves_png_size_follows_dpi_and_metrics(tmp_path):
    small = plot_training_curves(HISTORY, EVALUATIONS, tmp_path / "small.png", dpi=50)
    large = plot_training_curves(HISTORY, EVALUATIONS, tmp_path / "nested" / "large.png", dpi=100)
    (small_h, small_w), (large_h, large_w) = read_back(small).shape[:2], read_back(large).shape[:2]
    assert abs(large_w - 2 * small_w) <= 1 and abs(large_h - 2 * small_h) <= 1
    assert large_w == 700  # 7 inches at 100 dpi
    # val_loss joins the loss panel; val_bleu adds a panel; the string is skipped
    no_evaluations = read_back(plot_training_curves(HISTORY, [], tmp_path / "plain.png"))
    assert no_evaluations.shape[1] == large_w and no_evaluations.shape[0] < large_h


def test_training_curves_accept_a_single_point(tmp_path):
    read_back(plot_training_curves([(1, 2.5, 0.0)], [{"step": 1, "exact_match": 0.0}], tmp_path / "one.png"))


@pytest.mark.parametrize(
    ("history", "evaluations", "message"),
    [
        ([], [], "history is empty"),
        ([(1, 2.0)], [], r"history\[0\] = \(1, 2.0\): expected \(step, loss, learning rate\)"),
        (HISTORY, [{"val_loss": 1.0}], r"evaluations\[0\] has no 'step'"),
    ],
)
def test_training_curves_reject_bad_input(tmp_path, history, evaluations, message):
    with pytest.raises(ValueError, match=message):
        plot_training_curves(history, evaluations, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


# ---------------------------------------------------------------- attention maps


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("encoder.layers.0.self_attention", "encoder"),
        ("decoder.layers.1.self_attention", "decoder"),
        ("decoder.layers.1.cross_attention", "cross"),
        ("layers.3.self_attention", "decoder"),  # a decoder-only model
    ],
)
def test_attention_kind_comes_from_the_module_name(name, kind):
    assert attention_kind(name) == kind


def test_attention_png_grows_with_heads_and_layers(tmp_path):
    base = read_back(plot_attention(attention_weights(), SOURCE, TARGET, tmp_path / "base.png", title="t"))
    wider = read_back(plot_attention(attention_weights(heads=3), SOURCE, TARGET, tmp_path / "wide.png", title="t"))
    taller = read_back(plot_attention(attention_weights(layers=2), SOURCE, TARGET, tmp_path / "tall.png", title="t"))
    assert wider.shape[1] > base.shape[1] and wider.shape[0] == base.shape[0]
    assert taller.shape[0] > base.shape[0] and taller.shape[1] == base.shape[1]


def test_attention_accepts_one_kind_and_other_array_types(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    weights = {
        # as capture_attention records them: a (1, h, q, k) tensor that requires grad, in bfloat16
        "encoder.layers.1.self_attention": torch.tensor(softmax_rows(rng, 1, 2, 4, 4), requires_grad=True)
        .to(torch.bfloat16),
        "encoder.layers.0.self_attention": softmax_rows(rng, 4, 4).tolist(),  # one head, a nested list
    }
    read_back(plot_attention(weights, SOURCE, TARGET, tmp_path / "encoder.png"))


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("encoder.layers.0.self_attention", (2, 4, 5),
         r"encoder.layers.0.self_attention \(encoder self-attention\) has 5 keys but source_tokens has 4 tokens"),
        ("decoder.layers.0.self_attention", (2, 2, 3),
         r"decoder.layers.0.self_attention \(decoder self-attention\) has 2 queries but target_tokens has 3"),
        ("decoder.layers.0.cross_attention", (2, 3, 3),
         r"decoder.layers.0.cross_attention \(cross-attention\) has 3 keys but source_tokens has 4"),
        ("decoder.layers.0.cross_attention", (2, 2, 3, 4), r"expected attention weights of shape \(h, q, k\)"),
    ],
)
def test_attention_rejects_weights_that_do_not_match_the_tokens(tmp_path, name, shape, message):
    weights = attention_weights()
    weights[name] = np.full(shape, 0.25)
    with pytest.raises(ValueError, match=message):
        plot_attention(weights, SOURCE, TARGET, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_attention_rejects_nothing_to_plot(tmp_path):
    with pytest.raises(ValueError, match="weights is empty"):
        plot_attention({}, SOURCE, TARGET, tmp_path / "empty.png")


def test_a_confusion_matrix_and_an_image_attention_map_are_pngs(tmp_path):
    confusion = [[5, 1, 0], [0, 7, 2], [1, 0, 9]]
    path = plot_confusion(confusion, ["cat", "dog", "$bird"], tmp_path / "confusion.png")
    assert read_back(path).shape[:2] == png_size(path)
    image = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    path = plot_image_attention(image, np.full((4, 4), 1 / 16), tmp_path / "attention.png", title="x.png: cat")
    assert read_back(path).shape[:2] == png_size(path)
    grey = plot_image_attention(image[:1], np.ones((2, 2)), tmp_path / "grey.png")
    assert grey.is_file()


@pytest.mark.parametrize("call, message", [
    (lambda out: plot_confusion([[1, 2]], ["a"], out), r"confusion of shape \(1, 2\) for 1 classes"),
    (lambda out: plot_image_attention(np.zeros((8, 8)), np.ones((2, 2)), out), r"expected \(channels, height, width\)"),
    (lambda out: plot_image_attention(np.zeros((1, 8, 8)), np.ones(4), out), r"expected \(rows, cols\)"),
])
def test_confusion_and_image_attention_reject_bad_shapes(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path / "x.png")


def test_return_curve_is_a_png_and_refuses_mismatched_figures(tmp_path):
    path = plot_return_curve([500, 100, 300], [480.0, 90.0, 310.0], [5.0, 20.0, 40.0], tmp_path / "curve.png",
                             title="CartPole-v1")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="2 targets, 1 returns, 2 spreads"):
        plot_return_curve([1, 2], [1.0], [0.0, 0.0], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="give two or more"):
        plot_return_curve([1], [1.0], [0.0], tmp_path / "bad.png")
