"""Multi30k: explicit folder, then $TAA_DATA, then a checked download, all read the same way.

Downloads are tested offline: urllib opens ``file://`` URLs, so a local mirror of
the shared files stands in for the public source.
"""

import shutil
from pathlib import Path

import pytest

from taa.data import multi30k
from taa.data.multi30k import (
    DATA_ENV,
    MULTI30K_FILES,
    SPLIT_SIZES,
    SPLITS,
    download_multi30k,
    find_data_dir,
    load_multi30k,
    multi30k_paths,
    sha256_of,
)
from taa.data.text import DataError


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)


@pytest.fixture
def mirror(data_dir, tmp_path) -> Path:
    """A writable copy of the six source files, to corrupt at will."""
    folder = tmp_path / "mirror"
    shutil.copytree(data_dir / "multi30k", folder)
    return folder


def test_find_data_dir_prefers_explicit_then_env(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "from-env"))
    assert find_data_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"
    assert find_data_dir(None) == tmp_path / "from-env"
    monkeypatch.delenv(DATA_ENV)
    assert find_data_dir(None) is None
    monkeypatch.setenv(DATA_ENV, "")
    assert find_data_dir(None) is None


def test_multi30k_paths_name_every_missing_file(tmp_path):
    (tmp_path / "multi30k").mkdir()
    (tmp_path / "multi30k" / "val.de.gz").write_bytes(b"")
    with pytest.raises(DataError) as error:
        multi30k_paths(tmp_path, "val", "de", "fr")
    assert "missing val.fr.gz" in str(error.value) and str(tmp_path / "multi30k") in str(error.value)
    with pytest.raises(DataError) as error:
        multi30k_paths(tmp_path, "train")
    assert "missing train.de.gz, train.en.gz" in str(error.value)
    with pytest.raises(DataError, match="unknown Multi30k split 'test'"):
        multi30k_paths(tmp_path, "test")


def test_the_hash_table_matches_the_shared_files(data_dir):
    assert sorted(MULTI30K_FILES) == sorted(f"{s}.{lang}.gz" for s in SPLITS for lang in ("de", "en"))
    for name, expected in MULTI30K_FILES.items():
        assert sha256_of(data_dir / "multi30k" / name) == expected, name


def test_every_split_has_its_published_size(data_dir):
    for split in SPLITS:
        pairs = load_multi30k(split, data_dir=data_dir)
        assert len(pairs) == SPLIT_SIZES[split]
    assert pairs[0] == (
        "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
        "A man in an orange hat starring at something.",
    )


def test_explicit_dir_beats_env(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "empty"))
    assert len(load_multi30k("val", data_dir=data_dir)) == 1014
    with pytest.raises(DataError, match="missing val.de.gz"):
        load_multi30k("val")  # $TAA_DATA is used, and is empty: no silent download


def test_env_is_used_without_download(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(data_dir))
    pairs = load_multi30k("val", cache_dir=tmp_path / "cache", base_url=(tmp_path / "nothing").as_uri())
    assert len(pairs) == 1014
    assert not (tmp_path / "cache").exists()


def test_download_fills_the_cache_and_reads_like_any_data_dir(data_dir, mirror, tmp_path, no_env):
    cache = tmp_path / "cache"
    assert download_multi30k(cache, base_url=mirror.as_uri()) == cache
    assert sorted(p.name for p in (cache / "multi30k").iterdir()) == sorted(MULTI30K_FILES)
    for name, expected in MULTI30K_FILES.items():
        assert sha256_of(cache / "multi30k" / name) == expected
    # load_multi30k with neither a folder nor $TAA_DATA goes through the download
    pairs = load_multi30k("test_2016_flickr", cache_dir=cache, base_url=mirror.as_uri())
    assert pairs == load_multi30k("test_2016_flickr", data_dir=data_dir)


def test_download_keeps_good_files_and_replaces_bad_ones(mirror, tmp_path, no_env):
    cache = download_multi30k(tmp_path / "cache", base_url=mirror.as_uri())
    good, bad = cache / "multi30k" / "train.de.gz", cache / "multi30k" / "val.en.gz"
    good_mtime = good.stat().st_mtime_ns
    bad.write_bytes(b"half a file")
    download_multi30k(cache, base_url=mirror.as_uri())
    assert good.stat().st_mtime_ns == good_mtime
    assert sha256_of(bad) == MULTI30K_FILES["val.en.gz"]


def test_corrupt_source_is_a_checksum_error_naming_the_file(mirror, tmp_path, no_env):
    corrupt = mirror / "val.en.gz"
    data = bytearray(corrupt.read_bytes())
    data[100] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as error:
        load_multi30k("val", cache_dir=cache, base_url=mirror.as_uri())
    message = str(error.value)
    assert "checksum mismatch for val.en.gz" in message and MULTI30K_FILES["val.en.gz"] in message
    # nothing half-written: no val.en.gz, no temporary file
    assert not (cache / "multi30k" / "val.en.gz").exists()
    assert not [p for p in (cache / "multi30k").iterdir() if p.name.startswith(".")]


def test_unreachable_source_is_a_clear_error(tmp_path, no_env):
    missing = tmp_path / "no-mirror"
    with pytest.raises(DataError, match=r"train\.de\.gz: download failed"):
        download_multi30k(tmp_path / "cache", base_url=missing.as_uri())
    assert list((tmp_path / "cache" / "multi30k").iterdir()) == []


def test_failed_download_says_where_to_point_instead(tmp_path, no_env):
    with pytest.raises(DataError) as error:
        download_multi30k(tmp_path / "cache", base_url=(tmp_path / "no-mirror").as_uri())
    message = str(error.value)
    assert "TAA_DATA" in message and "data.dir" in message and "\n" not in message


def test_default_cache_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert multi30k.default_cache_dir() == tmp_path / "taa" / "data"
