"""taa.data.images: the IDX, CIFAR-10 binary, image-folder and datasets readers, their
one-line errors, the splits, and the checked download (through file://)."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest

from taa.data import images as imgs
from taa.data.images import (
    ImageSet,
    download_dataset,
    load_digits,
    read_cifar10,
    read_hf_images,
    read_idx,
    read_idx_pair,
    read_image_folder,
    split_images,
)
from taa.data.text import DataError


def idx_bytes(array: np.ndarray, kind: int = 0x08) -> bytes:
    return bytes([0, 0, kind, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_pair(folder, n=12, size=6, prefix="train", compress=True):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = (np.arange(n) % 3).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    opener = gzip.compress if compress else (lambda data: data)
    suffix = ".gz" if compress else ""
    (folder / f"{prefix}-images-idx3-ubyte{suffix}").write_bytes(opener(idx_bytes(pixels)))
    (folder / f"{prefix}-labels-idx1-ubyte{suffix}").write_bytes(opener(idx_bytes(labels)))
    return pixels, labels


@pytest.mark.parametrize("compress", [True, False])
def test_an_idx_pair_reads_plain_or_gzip_from_its_folder(tmp_path, compress):
    pixels, labels = write_pair(tmp_path, compress=compress)
    found = read_idx_pair(tmp_path)
    assert found.images.shape == (12, 1, 6, 6) and found.images.dtype == np.uint8
    np.testing.assert_array_equal(found.images[:, 0], pixels)
    np.testing.assert_array_equal(found.labels, labels)


def test_idx_values_of_every_type_read_as_the_header_says(tmp_path):
    values = np.arange(6, dtype=">i4").reshape(2, 3)
    (tmp_path / "ints").write_bytes(idx_bytes(values, 0x0C))
    np.testing.assert_array_equal(read_idx(tmp_path / "ints"), values.astype(np.int32))


@pytest.mark.parametrize("data, message", [
    (b"\x01\x02\x08\x01", "not an IDX file"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX value type 0x07"),
    (b"\x00\x00\x08\x03\x00\x00", "IDX header cut short"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x00", r"shape \(5,\) \(5 bytes of values\) but the file holds 2"),
    (b"\x1f\x8b\x08\x00broken", "damaged gzip data"),
])
def test_a_damaged_idx_file_is_one_line_naming_it(tmp_path, data, message):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_idx_pair_errors_name_the_file(tmp_path):
    write_pair(tmp_path / "a")
    (tmp_path / "a" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(DataError, match="5 labels for the 12 images"):
        read_idx_pair(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="expected one IDX images file"):
        read_idx_pair(tmp_path / "empty")
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "missing")


def test_the_shared_mnist5k_folder_reads_as_4000_labelled_digits(data_dir):
    folder = data_dir / "mnist5k"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    found = read_idx_pair(folder)
    assert found.images.shape == (4000, 1, 28, 28)
    assert np.bincount(found.labels).tolist() == [400] * 10


def cifar_records(labels, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    raw = b"".join(bytes([label]) + pixels[i].tobytes() for i, label in enumerate(labels))
    return raw, pixels


def test_cifar10_binary_batches_read_as_red_green_blue_planes(tmp_path):
    raw, pixels = cifar_records([3, 9, 0])
    (tmp_path / "data_batch_1.bin").write_bytes(raw)
    raw2, pixels2 = cifar_records([1], seed=1)
    (tmp_path / "data_batch_2.bin").write_bytes(raw2)
    one = read_cifar10(tmp_path / "data_batch_1.bin")
    assert one.labels.tolist() == [3, 9, 0] and one.classes[3] == "cat"
    np.testing.assert_array_equal(one.images, pixels)
    both = read_cifar10(tmp_path)
    assert both.labels.tolist() == [3, 9, 0, 1]
    np.testing.assert_array_equal(both.images[3], pixels2[0])


def test_cifar10_errors_and_the_pickled_version_refused(tmp_path):
    (tmp_path / "pickled").write_bytes(b"\x80\x04\x95" + b"\x00" * 20)
    with pytest.raises(DataError, match="never unpickles"):
        read_cifar10(tmp_path / "pickled")
    (tmp_path / "short.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="100 bytes is not a whole number of CIFAR-10 records"):
        read_cifar10(tmp_path / "short.bin")
    raw, _ = cifar_records([1, 12])
    (tmp_path / "label.bin").write_bytes(raw)
    with pytest.raises(DataError, match="record 2 has label 12"):
        read_cifar10(tmp_path / "label.bin")


def test_an_image_folder_reads_png_and_jpeg_resized_by_class(tmp_path):
    from PIL import Image

    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    Image.fromarray(np.full((10, 12, 3), 200, np.uint8)).save(tmp_path / "cat" / "a.png")
    Image.fromarray(np.full((8, 8, 3), 50, np.uint8)).save(tmp_path / "dog" / "b.jpg")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    found = read_image_folder(tmp_path, channels=3, size=(8, 8))
    assert found.classes == ["cat", "dog"] and found.labels.tolist() == [0, 1]
    assert found.images.shape == (2, 3, 8, 8)
    assert abs(int(found.images[0].mean()) - 200) <= 1 and abs(int(found.images[1].mean()) - 50) <= 2
    grey = read_image_folder(tmp_path, channels=1, size=(4, 4))
    assert grey.images.shape == (2, 1, 4, 4)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not an image Pillow can read"):
        read_image_folder(tmp_path, channels=3, size=(8, 8))


def test_a_saved_hugging_face_dataset_reads_its_image_and_label_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    rows = {"image": [Image.fromarray(np.full((6, 6), v, np.uint8)) for v in (10, 240, 30)], "label": [0, 1, 0]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    found = read_hf_images(tmp_path / "ds", channels=1, size=(6, 6))
    assert found.classes == ["a", "b"] and found.labels.tolist() == [0, 1, 0]
    assert found.images[:, 0, 0, 0].tolist() == [10, 240, 30]
    with pytest.raises(DataError, match="no column 'picture'"):
        read_hf_images(tmp_path / "ds", channels=1, size=(6, 6), image_column="picture")
    with pytest.raises(DataError, match="not a dataset saved with save_to_disk"):
        read_hf_images(tmp_path, channels=1, size=(6, 6))


def test_digits_and_splits():
    digits = load_digits()
    assert digits.images.shape == (1797, 1, 8, 8) and digits.images.max() == 255
    first, second = split_images(digits, 0.5, seed=0, halves=True)
    assert (len(first), len(second)) == (898, 899)
    np.testing.assert_array_equal(second.labels, digits.labels[898:])
    kept, held = split_images(digits, 0.2, seed=3)
    assert len(kept) + len(held) == 1797
    counts = np.bincount(held.labels, minlength=10) / np.bincount(digits.labels, minlength=10)
    assert np.allclose(counts, 0.2, atol=0.01)  # stratified
    again, _ = split_images(digits, 0.2, seed=3)
    np.testing.assert_array_equal(again.labels, kept.labels)
    with pytest.raises(ValueError, match="12 labels for 3 images"):
        ImageSet(np.zeros((3, 1, 2, 2), np.uint8), np.zeros(12, np.int64))


def test_the_download_checks_every_file_and_keeps_what_is_already_there(tmp_path, monkeypatch):
    source = tmp_path / "source"
    write_pair(source, prefix="train")
    write_pair(source, n=6, prefix="t10k")
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in source.iterdir()}
    monkeypatch.setitem(imgs.DOWNLOADS, "mnist", (source.as_uri() + "/", files, imgs.DIGITS))
    folder = download_dataset("mnist", cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    test = imgs.load_downloaded("mnist", "test", cache_dir=tmp_path / "cache")
    assert len(test) == 6 and test.classes[0] == "0"

    wrong = {**files, "t10k-labels-idx1-ubyte.gz": "0" * 64}
    monkeypatch.setitem(imgs.DOWNLOADS, "mnist", (source.as_uri() + "/", wrong, imgs.DIGITS))
    with pytest.raises(DataError, match="checksum mismatch for t10k-labels-idx1-ubyte.gz.*nothing was written"):
        download_dataset("mnist", cache_dir=tmp_path / "other")
    assert not (tmp_path / "other" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    with pytest.raises(DataError, match="unknown image dataset 'svhn'"):
        download_dataset("svhn", cache_dir=tmp_path)


def test_the_cifar10_download_takes_its_batches_out_of_the_checked_archive(tmp_path, monkeypatch):
    import io
    import tarfile

    source = tmp_path / "source"
    source.mkdir()
    archive = source / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i, name in enumerate(imgs.CIFAR10_BATCHES):
            raw, _ = cifar_records([i % 10, (i + 1) % 10], seed=i)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        extra = tarfile.TarInfo("../outside.bin")  # a path outside the folder is never written
        extra.size = 1
        tar.addfile(extra, io.BytesIO(b"x"))
    files = {archive.name: hashlib.sha256(archive.read_bytes()).hexdigest()}
    monkeypatch.setitem(imgs.DOWNLOADS, "cifar10", (source.as_uri() + "/", files, imgs.CIFAR10_CLASSES))
    train = imgs.load_downloaded("cifar10", "train", cache_dir=tmp_path / "cache")
    test = imgs.load_downloaded("cifar10", "test", cache_dir=tmp_path / "cache")
    assert len(train) == 10 and len(test) == 2 and test.labels.tolist() == [5, 6]
    assert train.images.shape == (10, 3, 32, 32) and train.classes[0] == "airplane"
    assert not (tmp_path / "cache" / "outside.bin").exists() and not (tmp_path / "outside.bin").exists()

    monkeypatch.setitem(imgs.DOWNLOADS, "cifar10", (source.as_uri() + "/", {archive.name: "0" * 64},
                                                    imgs.CIFAR10_CLASSES))
    with pytest.raises(DataError, match="checksum mismatch for cifar-10-binary.tar.gz"):
        download_dataset("cifar10", cache_dir=tmp_path / "other")
