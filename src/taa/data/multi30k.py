"""Multi30k task 1 (Elliott et al. 2016): German-English image descriptions.

29000 training pairs, 1014 for validation and 1000 for test (``test_2016_flickr``),
one untokenized, cased sentence a line, gzip files as the source publishes them.

Where the data comes from, first match wins:

1. an explicit folder (``--set data.dir=...``),
2. the environment variable ``TAA_DATA``,
3. a download from the public source into a cache folder.

Each of these is a *data folder* that holds ``multi30k/{split}.{lang}.gz``; the
download fills ``<cache>/multi30k/`` and is then read through the very same code
path as the other two. Downloads are checked against the sha256 of every file,
and each file is written under a temporary name and renamed when complete, so an
interrupted download never leaves a half file behind.

The data is for non-commercial research and education only (see the source
README); cite Elliott et al. 2016 when you use it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from taa.data.text import DataError, read_parallel

SPLITS = ("train", "val", "test_2016_flickr")
LANGUAGES = ("de", "en")
SPLIT_SIZES = {"train": 29000, "val": 1014, "test_2016_flickr": 1000}

# multi30k/dataset @ a3d2e0d26b56f3846f66a952536ffed4e401d05a, data/task1/raw/
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"

# sha256 of each gzip file exactly as the source publishes it
MULTI30K_FILES = {
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
}

DATA_ENV = "TAA_DATA"
SUBFOLDER = "multi30k"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/taa/data`` (``~/.cache/taa/data`` when unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "taa" / "data"


def find_data_dir(explicit: Optional[str | Path] = None) -> Optional[Path]:
    """The data folder to read: ``explicit``, else ``$TAA_DATA``, else None (download)."""
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get(DATA_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return None


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown Multi30k split {split!r} (known: {', '.join(SPLITS)})")


def multi30k_paths(
    data_dir: str | Path, split: str, source_lang: str = "de", target_lang: str = "en"
) -> tuple[Path, Path]:
    """(source, target) files of ``split`` in ``data_dir/multi30k/``; both must exist."""
    _check_split(split)
    folder = Path(data_dir) / SUBFOLDER
    paths = (folder / f"{split}.{source_lang}.gz", folder / f"{split}.{target_lang}.gz")
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"{folder}: missing {', '.join(missing)} (a data folder holds multi30k/{{split}}.{{lang}}.gz; "
            f"set data.dir or {DATA_ENV} to the folder that contains multi30k/, or leave both unset to download)"
        )
    return paths


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_checked(url: str, destination: Path, expected_sha256: str, timeout: float, where: str = "") -> None:
    """Download ``url`` to ``destination`` via a temporary file; rename only if the hash matches.
    ``where``: what a failed download's message tells the user to do instead."""
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        digest.update(block)
                        out.write(block)
            except (urllib.error.URLError, OSError) as error:
                where_else = where or (f"put the Multi30k files in a folder's multi30k/ and point ${DATA_ENV} "
                                       "(or the recipe's data.dir) at that folder")
                raise DataError(f"{url}: download failed ({getattr(error, 'reason', error)}); {where_else}") from None
        if digest.hexdigest() != expected_sha256:
            raise DataError(
                f"{url}: checksum mismatch for {destination.name} "
                f"(sha256 {digest.hexdigest()}, expected {expected_sha256}); nothing was written"
            )
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def download_multi30k(
    cache_dir: Optional[str | Path] = None, base_url: str = DEFAULT_BASE_URL, timeout: float = 60.0
) -> Path:
    """Fetch the six German-English files into ``cache_dir/multi30k/``; return ``cache_dir``.

    Files already there with the right sha256 are kept; any other file is fetched
    again. ``base_url`` may be any URL urllib opens, ``file://`` included.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = cache_dir / SUBFOLDER
    folder.mkdir(parents=True, exist_ok=True)
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    for name, expected in MULTI30K_FILES.items():
        destination = folder / name
        if destination.is_file() and sha256_of(destination) == expected:
            continue
        fetch_checked(base_url + name, destination, expected, timeout)
    return cache_dir


def load_multi30k(
    split: str,
    data_dir: Optional[str | Path] = None,
    cache_dir: Optional[str | Path] = None,
    source_lang: str = "de",
    target_lang: str = "en",
    base_url: str = DEFAULT_BASE_URL,
) -> list[tuple[str, str]]:
    """(source, target) pairs of a Multi30k split from ``data_dir``, ``$TAA_DATA`` or a download."""
    _check_split(split)
    folder = find_data_dir(data_dir)
    if folder is None:
        folder = download_multi30k(cache_dir, base_url=base_url)
    return read_parallel(*multi30k_paths(folder, split, source_lang, target_lang))
