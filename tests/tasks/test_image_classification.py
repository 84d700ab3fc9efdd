"""The image classification task: augmentation, resumable batches, a short digits run, and
the commands that use the run (classify, evaluate, viz attention) or a Hugging Face ViT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from taa.cli import main
from taa.config import RecipeConfig
from taa.data.images import load_digits
from taa.tasks.image_classification import ImageBatches, augment

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "vit-digits.yaml"
SHORT = ["train.steps=150", "train.max_minutes=0", "train.eval_every=75", "train.warmup_steps=20",
         "train.log_every=50", "train.threads=1", "data.shift=0", "data.rotate=0", "data.scale=0"]


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def taa_train(out, *settings: str):
    args = ["train", str(RECIPE), "--out", str(out), "--tracking", "none", "--no-progress", "--json"]
    for setting in settings:
        args += ["--set", setting]
    return run(*args)


def test_augmentation_moves_by_whole_pixels_and_flips_only_when_asked():
    torch.manual_seed(0)
    images = torch.rand(6, 1, 8, 8)
    generator = torch.Generator().manual_seed(1)
    assert augment(images, generator) is images  # nothing asked, nothing done
    shifted = augment(images, generator, shift=2)

    def moved(image, dy, dx):  # the image moved down dy and right dx, zeros coming in
        out = torch.zeros_like(image)
        out[..., max(dy, 0):8 + min(dy, 0), max(dx, 0):8 + min(dx, 0)] = \
            image[..., max(-dy, 0):8 + min(-dy, 0), max(-dx, 0):8 + min(-dx, 0)]
        return out

    for before, after in zip(images, shifted):
        assert any(torch.allclose(after, moved(before, dy, dx), atol=1e-5)
                   for dy in range(-2, 3) for dx in range(-2, 3))
    flipped = augment(images, generator, flip=True)
    for before, after in zip(images, flipped):
        assert torch.allclose(after, before, atol=1e-5) or torch.allclose(after, before.flip(-1), atol=1e-5)
    turned = augment(images, generator, rotate=15, scale=0.1)
    assert turned.shape == images.shape and not torch.allclose(turned, images)


def test_batches_resume_where_they_stopped():
    digits = load_digits().subset(np.arange(200))
    recipe = RecipeConfig.load(RECIPE)
    stream = ImageBatches(digits, 32, seed=3, task=recipe.data)
    seen = [next(stream) for _ in range(8)]  # 6 batches an epoch: two epochs begin
    again = ImageBatches(digits, 32, seed=3, task=recipe.data)
    [next(again) for _ in range(3)]
    resumed = ImageBatches(digits, 32, seed=3, task=recipe.data)
    resumed.load_state_dict(again.state_dict())
    for expected in seen[3:]:
        batch = next(resumed)
        assert torch.equal(batch.pixel_values, expected.pixel_values) and torch.equal(batch.labels, expected.labels)
    assert seen[0].pixel_values.shape == (32, 1, 8, 8)


def test_recipe_errors_are_one_line(tmp_path):
    result = taa_train(tmp_path / "a", "data.flip=true")
    assert result.exit_code != 0 and "digits allow no flips" in result.output
    result = taa_train(tmp_path / "b", "data.label_names=[a, b]")
    assert result.exit_code != 0 and "data.label_names has 2 names for model.num_labels=10" in result.output
    result = taa_train(tmp_path / "c", "data.source=folder")
    assert result.exit_code != 0 and "source=folder needs a path" in result.output


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A short run of the digits recipe, and a folder of its test digits as PNG files."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("vit")
    result = taa_train(folder / "run", *SHORT)
    assert result.exit_code == 0, result.output
    digits = load_digits()
    for index in range(1700, 1797):  # the test half's last digits, by class
        label = int(digits.labels[index])
        (folder / "png" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.images[index, 0]).save(folder / "png" / str(label) / f"{index}.png")
    return folder, json.loads(result.output)["metrics"]


def test_a_short_digits_run_learns_and_reports_its_test_set(digits_run):
    folder, metrics = digits_run
    assert metrics["steps"] == 150 and metrics["test_examples"] == 899 and metrics["train_examples"] == 808
    assert metrics["valid_examples"] == 90 and metrics["test_accuracy"] > 0.5  # ten classes: chance is 0.1
    assert sorted(metrics["best_steps"]) in ([75], [150])
    assert json.loads((folder / "run" / "classes.json").read_text()) == [str(i) for i in range(10)]
    confusion = json.loads((folder / "run" / "test_confusion.json").read_text())["confusion"]
    assert sum(map(sum, confusion)) == 899
    assert sum(confusion[i][i] for i in range(10)) == round(metrics["test_accuracy"] * 899)


def test_classify_evaluate_and_viz_use_the_run(digits_run, tmp_path):
    folder, _ = digits_run
    files = sorted((folder / "png").rglob("*.png"))[:3]
    result = run("classify", "--checkpoint", str(folder / "run"), "--json", *map(str, files))
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["image"] for row in rows] == list(map(str, files))
    assert all(abs(sum(row["probabilities"].values()) - 1) < 1e-5 and row["label"] in row["probabilities"]
               for row in rows)

    result = run("evaluate", "--checkpoint", str(folder / "run"), "--data", str(folder / "png"), "--json",
                 "--plot", str(tmp_path / "confusion.png"))
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["examples"] == 97 and 0.0 <= scores["accuracy"] <= 1.0
    assert sum(map(sum, scores["confusion"])) == 97 and (tmp_path / "confusion.png").stat().st_size > 1000
    text = run("evaluate", "--checkpoint", str(folder / "run"), "--data", str(folder / "png"))
    assert text.exit_code == 0 and f"{100 * scores['accuracy']:.2f}%" in text.output

    result = run("viz", "attention", "--checkpoint", str(folder / "run"), "--out", str(tmp_path / "a.png"),
                 str(files[0]))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.png").stat().st_size > 1000 and result.output.split("\n")[0] in [str(i) for i in range(10)]

    result = run("evaluate", "--checkpoint", str(folder / "run"), "--data", str(folder / "png" / "3" / "nothing"))
    assert result.exit_code != 0 and "no such file or folder" in result.output


def test_a_hugging_face_vit_classifies_image_files_with_its_label_names(tmp_path):
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    image_size=8, patch_size=4, num_channels=3,
                                    id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    torch.manual_seed(0)
    theirs = transformers.ViTForImageClassification(config).eval()
    theirs.save_pretrained(tmp_path / "hf", safe_serialization=True)
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    result = run("classify", "--checkpoint", str(tmp_path / "hf"), "--json", str(tmp_path / "x.png"))
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)[0]
    assert set(row["probabilities"]) == {"cat", "dog"}
    values = torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
    with torch.no_grad():
        expected = theirs((values - 0.5) / 0.5).logits.softmax(-1)[0]  # transformers' ViT processor: mean = std = 0.5
    assert abs(row["probabilities"]["dog"] - float(expected[1])) < 1e-5


def test_with_no_data_folder_the_mnist_recipe_downloads_mnist_and_tests_on_its_test_set(tmp_path, monkeypatch):
    """The download path a user with internet takes, here through file:// (no network)."""
    import gzip
    import hashlib
    import struct

    from taa.data import images as imgs
    from taa.tasks.image_classification import ImageClassificationTask

    def idx(array):
        return gzip.compress(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
                             + array.tobytes())

    source = tmp_path / "mirror"
    source.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 20)):
        (source / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx(rng.integers(0, 256, (n, 28, 28), np.uint8)))
        (source / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx((np.arange(n) % 10).astype(np.uint8)))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in source.iterdir()}
    monkeypatch.setitem(imgs.DOWNLOADS, "mnist", (source.as_uri() + "/", files, imgs.DIGITS))
    monkeypatch.delenv("TAA_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    task = ImageClassificationTask(RecipeConfig.load(ROOT / "recipes" / "vit-mnist.yaml"))
    task.read_data()
    assert len(task.test_images) == 20 and len(task.train_images) + len(task.valid_images) == 200
    assert (tmp_path / "cache" / "taa" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
    monkeypatch.setenv("TAA_DATA", str(tmp_path / "empty"))  # a data folder without mnist5k/: one line
    with pytest.raises(Exception, match="mnist5k: no such file or folder"):
        ImageClassificationTask(RecipeConfig.load(ROOT / "recipes" / "vit-mnist.yaml")).read_data()
