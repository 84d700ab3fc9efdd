"""Labelled images: the readers of the common formats, a split, and the downloads. Imports no framework.

Every reader returns an :class:`ImageSet`: ``images`` (n, channels, height, width) as
uint8, ``labels`` (n,) as int64, and the class names. What is wrong with a file is one
:class:`~taa.data.text.DataError` naming the file (and the record or field).

- **IDX** (MNIST, Fashion-MNIST; LeCun et al.): a big-endian header, magic ``0 0 type
  dims``, one 32-bit size per dimension, then the values; plain or gzip (read by its first
  bytes, not its name). :func:`read_idx` reads one file, :func:`read_idx_pair` an images
  and labels pair, or a folder holding one (``train-images-idx3-ubyte.gz`` and
  ``train-labels-idx1-ubyte.gz``, as ``mnist5k/`` does).
- **CIFAR-10's binary version** (Krizhevsky 2009): records of one label byte and 3,072
  pixel bytes (1,024 red, 1,024 green, 1,024 blue, each row-major 32 x 32);
  :func:`read_cifar10` reads a batch file or a folder of them. The pickled Python version
  is refused: unpickling runs code.
- **A folder of images in class subfolders** (``root/cat/001.png``; PNG or JPEG, through
  Pillow): :func:`read_image_folder`, the classes in sorted order, every image brought to
  one size and mode.
- **A Hugging Face ``datasets`` dataset** with an image column and a label column, from
  ``save_to_disk`` (:func:`read_hf_images`).
- **scikit-learn's 8 x 8 digits** (1,797 images, 0-16 grey levels, scaled to 0-255):
  :func:`load_digits`.

:func:`split_images` holds out a seeded, stratified part (or scikit-learn's usual first
half / second half for the digits). :func:`download_dataset` fetches MNIST,
Fashion-MNIST or CIFAR-10 (its binary archive) from their public sources into the cache,
each file checked by sha256 (any URL urllib opens, ``file://`` included).
"""

from __future__ import annotations

import gzip
import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from taa.data.multi30k import default_cache_dir, fetch_checked, sha256_of
from taa.data.text import DataError, open_input

# IDX value types: the third byte of the magic number -> numpy's big-endian dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_RECORD = 1 + 3 * 32 * 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DIGITS = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


@dataclass
class ImageSet:
    """Labelled images: ``images`` (n, c, h, w) uint8, ``labels`` (n,) int64, the class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str] = field(default_factory=list)  # the name of label i; empty: the label ids
    source: str = ""  # where they were read from, for messages

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"{self.source}: images should be (n, c, h, w) uint8, got {self.images.dtype} "
                             f"{self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{self.source}: {len(self.labels)} labels for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else int(self.labels.max()) + 1 if len(self.labels) else 0

    def subset(self, indices: np.ndarray) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices], list(self.classes), self.source)


# ------------------------------------------------------------------ IDX


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it starts with gzip's magic number."""
    with open_input(path) as stream:  # missing, a folder, unreadable: one line naming it
        raw = stream.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DataError(f"{path}: damaged gzip data ({error})") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (plain or gzip) -> its array, in the header's shape."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (its magic number should start with two zero bytes)")
    kind, dims = raw[2], raw[3]
    if kind not in IDX_TYPES:
        raise DataError(f"{path}: unknown IDX value type 0x{kind:02x} (known: "
                        f"{', '.join(f'0x{k:02x}' for k in IDX_TYPES)})")
    if dims == 0 or len(raw) < 4 + 4 * dims:
        raise DataError(f"{path}: IDX header cut short ({dims} dimensions, {len(raw)} bytes)")
    shape = struct.unpack(f">{dims}I", raw[4:4 + 4 * dims])
    dtype = np.dtype(IDX_TYPES[kind])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = raw[4 + 4 * dims:]
    if len(body) != expected:
        raise DataError(f"{path}: the header gives shape {shape} ({expected} bytes of values) but the file holds "
                        f"{len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_files(folder: Path) -> tuple[Path, Path]:
    """The images and labels files of an IDX folder (``*-images-idx3-ubyte[.gz]`` and
    ``*-labels-idx1-ubyte[.gz]``, one of each, or a ``train-`` pair among several)."""
    images = sorted(p for p in folder.iterdir() if "images-idx3" in p.name or "images.idx3" in p.name)
    labels = sorted(p for p in folder.iterdir() if "labels-idx1" in p.name or "labels.idx1" in p.name)
    if len(images) > 1 or len(labels) > 1:  # train and t10k side by side: the training pair
        images = [p for p in images if p.name.startswith("train")] or images
        labels = [p for p in labels if p.name.startswith("train")] or labels
    if len(images) != 1 or len(labels) != 1:
        raise DataError(f"{folder}: expected one IDX images file (*-images-idx3-ubyte[.gz]) and one labels file "
                        f"(*-labels-idx1-ubyte[.gz]); found {len(images)} and {len(labels)}")
    return images[0], labels[0]


def read_idx_pair(images: str | Path, labels: Optional[str | Path] = None,
                  classes: tuple[str, ...] = ()) -> ImageSet:
    """An IDX images file (n, h, w) and its labels file (n,); or, ``images`` being a folder,
    the pair it holds."""
    images = Path(images)
    if labels is None:
        if not images.exists():
            raise DataError(f"{images}: no such file or folder")
        if not images.is_dir():
            raise DataError(f"{images}: give a folder holding an IDX images/labels pair, or both files")
        images, labels = _idx_files(images)
    pixels, targets = read_idx(images), read_idx(labels)
    if pixels.ndim == 3:
        pixels = pixels[:, None]  # grey: one channel
    elif pixels.ndim != 4:
        raise DataError(f"{images}: IDX images should have 3 dimensions (n, height, width), not {pixels.ndim}")
    if pixels.dtype != np.uint8:
        raise DataError(f"{images}: IDX images should be unsigned bytes (type 0x08), not {pixels.dtype}")
    if targets.ndim != 1:
        raise DataError(f"{labels}: IDX labels should have 1 dimension, not {targets.ndim}")
    if len(targets) != len(pixels):
        raise DataError(f"{labels}: {len(targets)} labels for the {len(pixels)} images of {Path(images).name}")
    if (targets < 0).any():
        raise DataError(f"{labels}: label {int(targets.min())} is negative")
    return ImageSet(np.ascontiguousarray(pixels), targets.astype(np.int64), list(classes), str(images))


# ------------------------------------------------------------------ CIFAR-10


def read_cifar10(path: str | Path) -> ImageSet:
    """CIFAR-10's binary version: one batch file (``data_batch_1.bin``, ``test_batch.bin``), or a
    folder whose ``data_batch_*.bin`` files are read in order (its training set)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("data_batch_*.bin"))
        if not files:
            raise DataError(f"{path}: no data_batch_*.bin files (CIFAR-10's binary version)")
        parts = [read_cifar10(file) for file in files]
        return ImageSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                        list(CIFAR10_CLASSES), str(path))
    raw = _read_bytes(path)
    if raw[:1] == b"\x80":  # a pickle's protocol byte
        raise DataError(f"{path}: a pickled (Python) CIFAR batch; taa reads only CIFAR-10's binary version "
                        f"(cifar-10-binary.tar.gz), never unpickles")
    if not raw or len(raw) % CIFAR10_RECORD:
        raise DataError(f"{path}: {len(raw)} bytes is not a whole number of CIFAR-10 records "
                        f"({CIFAR10_RECORD} bytes each)")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASSES)))
        raise DataError(f"{path}: record {bad + 1} has label {int(labels[bad])}; CIFAR-10 has 10 classes")
    images = records[:, 1:].reshape(-1, 3, 32, 32)  # channel-major: red, green, blue planes
    return ImageSet(np.ascontiguousarray(images), labels, list(CIFAR10_CLASSES), str(path))


# ------------------------------------------------------------------ image folders


def _pillow() -> Any:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("reading image files needs Pillow: pip install 'taa[vision]'") from None
    return Image, UnidentifiedImageError


def read_image(path: str | Path, channels: int, size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """One PNG or JPEG file -> (channels, height, width) uint8: grey (1) or RGB (3), resized to
    ``size`` = (height, width) bilinearly when given."""
    Image, Unidentified = _pillow()
    path = Path(path)
    if channels not in (1, 3):
        raise DataError(f"{path}: taa reads images as grey (1 channel) or RGB (3), not {channels} channels")
    try:
        with Image.open(path) as image:
            return _pixels(image, channels, size)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Unidentified:
        raise DataError(f"{path}: not an image Pillow can read (PNG or JPEG)") from None
    except OSError as error:
        raise DataError(f"{path}: damaged image ({error})") from None


def _pixels(image: Any, channels: int, size: Optional[tuple[int, int]]) -> np.ndarray:
    """A Pillow image -> (channels, height, width) uint8, grey or RGB, resized to ``size`` =
    (height, width) bilinearly when given and different."""
    Image, _ = _pillow()
    image = image.convert("L" if channels == 1 else "RGB")
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def read_image_folder(root: str | Path, channels: int, size: tuple[int, int]) -> ImageSet:
    """``root/<class>/<image>.png|jpg``: every image, grey or RGB at ``size``, labelled by its
    subfolder; classes in sorted order (label i = the i-th name)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class subfolders (expected {root}/<class>/<image>.png)")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for file in files:
            images.append(read_image(file, channels, size))
            labels.append(label)
    if not images:
        raise DataError(f"{root}: no PNG or JPEG files in its class subfolders")
    return ImageSet(np.stack(images), np.array(labels, dtype=np.int64), classes, str(root))


# ------------------------------------------------------------------ Hugging Face datasets


def read_hf_images(path: str | Path, channels: int, size: tuple[int, int], split: Optional[str] = None,
                   image_column: str = "image", label_column: str = "label") -> ImageSet:
    """A ``datasets`` dataset saved with ``save_to_disk``: its image column (PIL images or
    encoded bytes) and integer label column; class names from a ``ClassLabel`` feature."""
    from taa.data.hf_datasets import _import_datasets, _select_split

    datasets = _import_datasets()
    Image, _ = _pillow()
    try:
        dataset = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as error:
        raise DataError(f"{path}: not a dataset saved with save_to_disk ({error})") from None
    dataset = _select_split(dataset, split, str(path))
    missing = [c for c in (image_column, label_column) if c not in dataset.column_names]
    if missing:
        raise DataError(f"{path}: no column {', '.join(map(repr, missing))} (columns: "
                        f"{', '.join(dataset.column_names)})")
    feature = dataset.features[label_column]
    classes = list(getattr(feature, "names", None) or [])
    images = []
    for row, value in enumerate(dataset[image_column]):
        if isinstance(value, dict) and value.get("bytes") is not None:
            value = Image.open(io.BytesIO(value["bytes"]))
        if not hasattr(value, "convert"):
            raise DataError(f"{path}: row {row} of column {image_column!r} is not an image")
        images.append(_pixels(value, channels, size))
    labels = np.asarray(dataset[label_column])
    if labels.dtype.kind not in "iu" or (labels < 0).any():
        raise DataError(f"{path}: column {label_column!r} should hold class ids (integers >= 0)")
    if not images:
        raise DataError(f"{path}: the dataset is empty")
    return ImageSet(np.stack(images), labels.astype(np.int64), classes, str(path))


# ------------------------------------------------------------------ scikit-learn's digits


def load_digits() -> ImageSet:
    """scikit-learn's 1,797 8 x 8 digits (its own copy of the UCI set, no download), their 17
    grey levels (0-16) scaled to 0-255."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError("the 8x8 digits ship with scikit-learn: pip install 'taa[vision]'") from None
    digits = sklearn_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    return ImageSet(pixels, digits.target.astype(np.int64), list(DIGITS), "scikit-learn digits")


# ------------------------------------------------------------------ splits


def split_images(images: ImageSet, fraction: float, seed: int, halves: bool = False) -> tuple[ImageSet, ImageSet]:
    """(kept, held out): ``fraction`` of each class held out at random (seeded, stratified), or,
    ``halves``, the first half kept and the second held out (scikit-learn's digits example)."""
    n = len(images)
    if halves:
        return images.subset(np.arange(n // 2)), images.subset(np.arange(n // 2, n))
    if not 0.0 < fraction < 1.0:
        raise DataError(f"{images.source}: a held-out fraction of {fraction} should be between 0 and 1")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(images.labels):
        members = np.flatnonzero(images.labels == label)
        count = int(round(fraction * len(members)))
        held.append(rng.permutation(members)[:count])
    out = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(n), out)
    if not len(out) or not len(keep):
        raise DataError(f"{images.source}: holding out {fraction} of {n} images leaves a side empty")
    return images.subset(keep), images.subset(out)


# ------------------------------------------------------------------ downloads

# name -> (base URL, {file: sha256}, class names); the files as their sources publish them
DOWNLOADS: dict[str, tuple[str, dict[str, str], tuple[str, ...]]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }, DIGITS),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    }, FASHION_CLASSES),
    # CIFAR-10's binary version, one archive (170,052,171 bytes; its MD5, published beside it,
    # is c32a1d4ab5d03f1284b67883e8d87530); its batch files are taken out of it once checked
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", {
        "cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    }, CIFAR10_CLASSES),
}
CIFAR10_FOLDER = "cifar-10-batches-bin"  # the archive's folder of batch files
CIFAR10_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)


def download_dataset(name: str, cache_dir: Optional[str | Path] = None, base_url: Optional[str] = None,
                     timeout: float = 60.0) -> Path:
    """Fetch the files of ``name`` (``mnist``, ``fashion-mnist``, ``cifar10``: its archive, whose
    batch files are then taken out into ``cifar-10-batches-bin/``) into ``cache_dir/<name>/``;
    return that folder. Files already there with the right sha256 are kept; a failed or
    mismatched download writes nothing."""
    if name not in DOWNLOADS:
        raise DataError(f"unknown image dataset {name!r} to download (known: {', '.join(DOWNLOADS)})")
    default_url, files, _ = DOWNLOADS[name]
    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / name
    folder.mkdir(parents=True, exist_ok=True)
    url = base_url or default_url
    url = url if url.endswith("/") else url + "/"
    for file, expected in files.items():
        destination = folder / file
        if destination.is_file() and sha256_of(destination) == expected:
            continue
        fetch_checked(url + file, destination, expected, timeout,
                      where="put its files in a folder and point the recipe's data.path at it")
    if name == "cifar10":
        _unpack_cifar10(folder / "cifar-10-binary.tar.gz", folder / CIFAR10_FOLDER)
    return folder


def _unpack_cifar10(archive: Path, folder: Path) -> None:
    """The batch files of CIFAR-10's (checked) archive into ``folder``, each written whole
    through a temporary name; only those files, by name, whatever paths the archive holds."""
    import tarfile

    if all((folder / name).is_file() for name in CIFAR10_BATCHES):
        return
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            found = set()
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and name in CIFAR10_BATCHES and name not in found:
                    partial = folder / f".{name}.part"
                    with tar.extractfile(member) as source, open(partial, "wb") as target:
                        target.write(source.read())
                    partial.replace(folder / name)
                    found.add(name)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"{archive}: not a readable CIFAR-10 archive ({error})") from None
    missing = [name for name in CIFAR10_BATCHES if name not in found]
    if missing:
        raise DataError(f"{archive}: no {missing[0]} in the archive")


def load_downloaded(name: str, split: str = "train", cache_dir: Optional[str | Path] = None,
                    base_url: Optional[str] = None) -> ImageSet:
    """The ``train`` or ``test`` (t10k; CIFAR-10's test batch) set of a downloaded dataset,
    fetched first if needed."""
    folder = download_dataset(name, cache_dir, base_url)
    if name == "cifar10":
        batches = folder / CIFAR10_FOLDER
        return read_cifar10(batches if split == "train" else batches / "test_batch.bin")
    prefix = {"train": "train", "test": "t10k"}[split]
    return read_idx_pair(folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz",
                         DOWNLOADS[name][2])
