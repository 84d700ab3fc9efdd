"""Image classification: train a Vision Transformer on labelled images (Dosovitskiy et al. 2021).

Pipeline:

1. read the images (:mod:`taa.data.images`: scikit-learn's 8x8 digits, IDX files such as
   MNIST, CIFAR-10's binary batches, a folder of class subfolders, a ``datasets`` dataset);
2. hold out the test set (or read ``test_path``), then a validation set from the rest,
   each stratified by class and seeded; the test images are seen only at the end;
3. batches of ``train.batch_size`` images in a seeded order per epoch, augmented in torch
   (:func:`augment`: random shifts, rotations, zoom, flips where the data allows them)
   from a generator seeded by the batch's place, so a resumed run sees the same batches;
4. cross-entropy on the logits of :class:`~taa.torch.models.vit.ViTForImageClassification`;
   the validation accuracy (``val_accuracy``) chooses the kept weights;
5. the test accuracy, loss and confusion matrix of the final weights.

Pixels become floats in [0, 1], then ``(x - mean) / std`` (``data.mean``/``data.std``,
0.5 and 0.5 as transformers' ViT image processor), the same for training, evaluation and
``taa classify``. The run folder keeps the class names (``classes.json``) for
``taa classify`` and ``taa evaluate``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taa import config as cfg
from taa.data.images import (
    DOWNLOADS,
    ImageSet,
    load_digits,
    load_downloaded,
    read_cifar10,
    read_hf_images,
    read_idx_pair,
    read_image,
    read_image_folder,
    split_images,
)
from taa.data.multi30k import find_data_dir
from taa.data.text import DataError
from taa.folders import read_json
from taa.tasks.classification import hf_label_names
from taa.tasks.runner import Task, run_function
from taa.torch.devices import model_device
from taa.torch.training import TrainResult

CLASSES_FILE = "classes.json"  # the class names, label i = the i-th
CONFUSION_FILE = "test_confusion.json"  # [true][predicted] counts on the test set
MNIST5K = "mnist5k"  # the subfolder of a data folder that holds 4,000 MNIST digits as IDX files


# ------------------------------------------------------------------ data


def read_images(task: cfg.ImageClassificationTaskConfig, model: cfg.ViTConfig, path: str = "",
                split: str = "train") -> ImageSet:
    """The images ``task.source`` names (``path``: another file or folder of the same kind),
    at the model's channels and size where the reader can bring them there."""
    size = (model.image_size, model.image_size)
    path = path or task.path
    if task.source == "digits":
        return load_digits()
    if task.source == "download":
        return load_downloaded(task.download, split)
    if task.source == "idx":
        if not path:
            path = str(find_data_dir(task.dir) / MNIST5K)  # (no data folder at all: resolved() downloads)
        return read_idx_pair(path, classes=DOWNLOADS["mnist"][2] if Path(path).name == MNIST5K else ())
    if task.source == "cifar10":
        return read_cifar10(path)
    if task.source == "folder":
        return read_image_folder(path, model.num_channels, size)
    return read_hf_images(path, model.num_channels, size, split=task.hf_split or None,
                          image_column=task.image_column, label_column=task.label_column)


def resolved(task: cfg.ImageClassificationTaskConfig) -> cfg.ImageClassificationTaskConfig:
    """The data section as it reads: IDX files with neither a path nor a data folder (no
    ``data.dir``, no ``$TAA_DATA``) are MNIST downloaded into the cache, its own test set
    the test set (as Multi30k downloads when no folder holds it)."""
    if task.source == "idx" and not task.path and find_data_dir(task.dir) is None:
        return dataclasses.replace(task, source="download", download="mnist")
    return task


def read_any_images(path: str | Path, model: cfg.ViTConfig) -> ImageSet:
    """``taa evaluate --data PATH``: a folder holding an IDX pair, a CIFAR-10 binary batch file
    (or a folder of them), or a folder of class subfolders, told apart by what they hold."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        return read_cifar10(path)
    names = [p.name for p in path.iterdir()]
    if any("idx3" in name for name in names):
        return read_idx_pair(path)
    if any(name.endswith(".bin") for name in names):
        return read_cifar10(path)
    return read_image_folder(path, model.num_channels, (model.image_size, model.image_size))


def check_images(images: ImageSet, model: cfg.ViTConfig, classes: int) -> None:
    """The images fit the model: its channels, a size its patches divide, labels below ``classes``."""
    _, channels, height, width = images.images.shape
    where = images.source
    if channels != model.num_channels:
        raise DataError(f"{where}: the images have {channels} channels; model.num_channels={model.num_channels}")
    if height % model.patch_size or width % model.patch_size:
        raise DataError(f"{where}: images of {height} x {width} pixels do not split into the model's "
                        f"{model.patch_size} x {model.patch_size} patches")
    if len(images) and int(images.labels.max()) >= classes:
        raise DataError(f"{where}: label {int(images.labels.max())} for a model of {classes} classes "
                        f"(model.num_labels={classes})")


def to_pixels(images: np.ndarray, mean: float, std: float) -> Tensor:
    """uint8 (b, c, h, w) -> float32 ((x / 255) - mean) / std."""
    return (torch.from_numpy(np.array(images, dtype=np.uint8)).float() / 255.0 - mean) / std


def augment(images: Tensor, generator: torch.Generator, shift: int = 0, rotate: float = 0.0, scale: float = 0.0,
            flip: bool = False) -> Tensor:
    """Random affine copies of (b, c, h, w) images in [0, 1]: each rotated by up to ``rotate``
    degrees, zoomed by a factor in [1 - scale, 1 + scale], moved by up to ``shift`` pixels
    each way, mirrored left-right with probability 1/2 when ``flip``; what comes in from
    outside the image is 0. Bilinear sampling (:func:`torch.nn.functional.grid_sample`)."""
    b, _, h, w = images.shape
    if not (shift or rotate or scale or flip):
        return images

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(b, generator=generator)

    angle = uniform(-rotate, rotate) * math.pi / 180.0
    zoom = uniform(1.0 - scale, 1.0 + scale)
    # a shift of k pixels is 2k / size in the grid's [-1, 1] coordinates; whole pixels
    dx = torch.randint(-shift, shift + 1, (b,), generator=generator).float() * 2.0 / w
    dy = torch.randint(-shift, shift + 1, (b,), generator=generator).float() * 2.0 / h
    mirror = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # the grid maps output to input: the inverse zoom
    theta = torch.stack([
        torch.stack([cos * mirror, -sin, -dx], dim=1),
        torch.stack([sin * mirror, cos, -dy], dim=1),
    ], dim=1)  # (b, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass
class ImageBatch:
    pixel_values: Tensor  # (b, c, h, w), normalised
    labels: Tensor  # (b,)


class ImageBatches:
    """Endless, resumable batches of augmented training images: each epoch a permutation drawn
    from (seed, epoch), each batch's augmentation from (seed, epoch, position)."""

    def __init__(self, images: ImageSet, batch_size: int, seed: int, task: cfg.ImageClassificationTaskConfig):
        self.images, self.batch_size, self.seed, self.task = images, batch_size, seed, task
        self.epoch, self.position = 0, 0  # the next batch to yield
        self.per_epoch = max(1, len(images) // batch_size)  # whole batches only: every batch the same shape

    def __iter__(self) -> ImageBatches:
        return self

    def __next__(self) -> ImageBatch:
        if self.position >= self.per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.images))
        indices = order[self.position * self.batch_size:(self.position + 1) * self.batch_size]
        generator = torch.Generator().manual_seed(int(np.random.default_rng(
            [self.seed, self.epoch, self.position, 1]).integers(2**62)))
        self.position += 1
        task = self.task
        pixels = torch.from_numpy(self.images.images[indices]).float() / 255.0
        pixels = augment(pixels, generator, task.shift, task.rotate, task.scale, task.flip)
        return ImageBatch((pixels - task.mean) / task.std, torch.from_numpy(self.images.labels[indices]))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


def image_loss(smoothing: float = 0.0):
    """Summed cross-entropy over the images of a batch, and their number."""

    def compute_loss(model: nn.Module, batch: ImageBatch) -> tuple[Tensor, Tensor]:
        logits = model(batch.pixel_values).float()  # (b, k)
        loss = F.cross_entropy(logits, batch.labels, reduction="sum", label_smoothing=smoothing)
        return loss, torch.tensor(len(batch.labels))

    return compute_loss


@torch.no_grad()
def evaluate_images(model: nn.Module, images: ImageSet, mean: float, std: float, batch_size: int = 256,
                    *, confusion: bool = False) -> dict[str, Any]:
    """Accuracy and mean cross-entropy over ``images``; ``confusion``: also the confusion
    matrix, ``confusion[true][predicted]`` images."""
    model.eval()
    classes = model.config.num_labels
    device = model_device(model)
    counts = torch.zeros(classes, classes, dtype=torch.long)
    total = 0.0
    for start in range(0, len(images), batch_size):
        pixels = to_pixels(images.images[start:start + batch_size], mean, std).to(device)
        labels = torch.from_numpy(images.labels[start:start + batch_size])
        logits = model(pixels).float().cpu()  # (b, k)
        total += float(F.cross_entropy(logits, labels, reduction="sum"))
        counts.index_put_((labels, logits.argmax(dim=-1)), torch.ones_like(labels), accumulate=True)
    n = max(1, len(images))
    result: dict[str, Any] = {"accuracy": int(counts.trace()) / n, "loss": total / n, "examples": len(images)}
    if confusion:
        result["confusion"] = counts.tolist()
    return result


# ------------------------------------------------------------------ the task


class ImageClassificationTask(Task):
    """Labelled images, a test set held out (or given), a validation set from the rest,
    augmented batches; the validation accuracy while training, the test set at the end."""

    example_preset = "vit-digits"
    rate_unit = "img"  # the loss counts images
    final_phase = "test evaluation"
    files = (CLASSES_FILE, CONFUSION_FILE)

    def check(self) -> None:
        task, model = self.recipe.data, self.recipe.model
        if task.label_names and len(task.label_names) != model.num_labels:
            raise cfg.ConfigError(f"data.label_names has {len(task.label_names)} names for "
                                  f"model.num_labels={model.num_labels}")
        if task.flip and task.source == "digits":
            raise cfg.ConfigError("data.flip=true: a mirrored digit is another symbol; digits allow no flips")

    def read_data(self) -> None:
        task, model = resolved(self.recipe.data), self.recipe.model
        images = read_images(task, model)
        if task.test_path or task.source == "download":
            rest, test = images, read_images(task, model, task.test_path, split="test")
        else:
            rest, test = split_images(images, task.test_fraction, task.split_seed, halves=task.split == "halves")
        self.train_images, self.valid_images = split_images(rest, task.valid_fraction, task.split_seed + 1)
        if task.max_train_examples:
            self.train_images = self.train_images.subset(np.arange(min(task.max_train_examples,
                                                                       len(self.train_images))))
        self.test_images = test
        for part in (self.train_images, self.valid_images, self.test_images):
            check_images(part, model, model.num_labels)
        self.classes = list(task.label_names or images.classes or [str(i) for i in range(model.num_labels)])
        if len(self.classes) != model.num_labels:
            raise DataError(f"{images.source}: {len(self.classes)} classes ({', '.join(self.classes[:5])}"
                            f"{', ...' if len(self.classes) > 5 else ''}) for model.num_labels={model.num_labels}")

    def batches(self) -> ImageBatches:
        train = self.recipe.train
        self.train_batches = ImageBatches(self.train_images, train.batch_size, train.seed, self.recipe.data)
        return self.train_batches

    def loss(self):
        return image_loss(self.recipe.train.label_smoothing)

    def validation_metrics(self) -> dict[str, str]:
        return {"val_loss": "min", "val_accuracy": "max"}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        task = self.recipe.data
        figures = evaluate_images(model, self.valid_images, task.mean, task.std, task.eval_batch_size)
        return {"val_accuracy": figures["accuracy"], "val_loss": figures["loss"]}

    def final_metrics(self, model: nn.Module, result: TrainResult) -> dict[str, Any]:
        task, train = self.recipe.data, self.recipe.train
        test = evaluate_images(model, self.test_images, task.mean, task.std, task.eval_batch_size, confusion=True)
        self.confusion = test["confusion"]
        return {
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "test_examples": test["examples"],
            "train_examples": len(self.train_images),
            "valid_examples": len(self.valid_images),
            "epochs": result.steps * train.batch_size * train.grad_accumulation / max(1, len(self.train_images)),
            "images_per_second": result.tokens_per_second,  # what the trainer's rate counts here
        }

    def write_files(self, folder: Path) -> None:
        (folder / CLASSES_FILE).write_text(json.dumps(self.classes) + "\n", encoding="utf-8")
        (folder / CONFUSION_FILE).write_text(json.dumps({"classes": self.classes, "confusion": self.confusion})
                                             + "\n", encoding="utf-8")


run = run_function(ImageClassificationTask)


# ------------------------------------------------------------------ using a trained model


def class_names(pretrained: Any) -> list[str]:
    """The names of labels 0, 1, ... of a loaded image classifier: a run's ``classes.json``,
    a Hugging Face folder's ``id2label`` (unless transformers made them up), else the ids."""
    folder, count = Path(pretrained.folder), pretrained.config.num_labels
    if (folder / CLASSES_FILE).is_file():
        names = read_json(folder / CLASSES_FILE)
        if isinstance(names, list) and len(names) == count:
            return [str(name) for name in names]
    return hf_label_names(folder, count) or [str(i) for i in range(count)]


def normalisation(pretrained: Any) -> tuple[float, float]:
    """(mean, std) the model's pixels were normalised with: the run's, else transformers' 0.5, 0.5."""
    recipe = pretrained.recipe
    if recipe is not None and isinstance(recipe.data, cfg.ImageClassificationTaskConfig):
        return recipe.data.mean, recipe.data.std
    return 0.5, 0.5


@torch.no_grad()
def classify_images(pretrained: Any, paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """``taa classify`` on image files: per image, its label's name and every class's probability."""
    model, config = pretrained.model, pretrained.config
    mean, std = normalisation(pretrained)
    pixels = np.stack([read_image(path, config.num_channels, (config.image_size, config.image_size))
                       for path in paths])
    probabilities = model(to_pixels(pixels, mean, std).to(model_device(model))).float().softmax(dim=-1).cpu()
    names = class_names(pretrained)
    return [{"image": str(path), "label": names[int(row.argmax())],
             "probabilities": {name: float(p) for name, p in zip(names, row.tolist())}}
            for path, row in zip(paths, probabilities)]


def score_file(pretrained: Any, path: str | Path, batch_size: int = 256) -> dict[str, Any]:
    """``taa evaluate --data PATH`` of an image classifier: accuracy, examples, loss, the
    confusion matrix and the class names."""
    images = read_any_images(path, pretrained.config)
    names = class_names(pretrained)
    if images.classes and images.classes != names:  # class subfolders: labels by name, as the model names them
        unknown = [name for name in images.classes if name not in names]
        if unknown:
            raise DataError(f"{images.source}: class {unknown[0]!r} is not one of the model's classes "
                            f"({', '.join(names)})")
        images.labels = np.array([names.index(images.classes[label]) for label in images.labels], dtype=np.int64)
        images.classes = list(names)
    check_images(images, pretrained.config, pretrained.config.num_labels)
    mean, std = normalisation(pretrained)
    figures = evaluate_images(pretrained.model, images, mean, std, batch_size, confusion=True)
    return {"task": "image_classification", **figures, "classes": class_names(pretrained)}


def load_image(path: str | Path, config: cfg.ViTConfig) -> np.ndarray:
    """One image file at the model's channels and size, (c, h, w) uint8."""
    return read_image(path, config.num_channels, (config.image_size, config.image_size))


def attention_map(pretrained: Any, path: str | Path) -> tuple[np.ndarray, np.ndarray, Optional[str]]:
    """The class token's attention rollout over an image: (image (c, h, w) uint8, the rollout
    over the patch grid (rows, cols), summing to 1, the predicted class's name)."""
    from taa.torch.attention import capture_attention
    from taa.torch.models.vit import attention_rollout

    model, config = pretrained.model, pretrained.config
    image = load_image(path, config)
    mean, std = normalisation(pretrained)
    pixels = to_pixels(image[None], mean, std).to(model_device(model))
    with torch.no_grad(), capture_attention(model) as captured:
        output = model(pixels)
    layers = [weights for name in sorted(captured, key=_layer_number) for weights in captured[name]]
    rollout = attention_rollout(layers)[0, 0, 1:].cpu().numpy()  # the class token's row, patches only
    grid = config.image_size // config.patch_size
    label = None
    if output.dim() == 2:  # a classifier's logits
        label = class_names(pretrained)[int(output[0].argmax())]
    return image, (rollout / rollout.sum()).reshape(grid, grid), label


def _layer_number(name: str) -> int:
    digits = [int(part) for part in name.split(".") if part.isdigit()]
    return digits[0] if digits else 0
