"""Fixtures for the data tests: the real Multi30k files, when they are present."""

import os
from pathlib import Path

import pytest

from taa.data import MULTI30K_FILES


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder that holds ``multi30k/`` ($TAA_DATA, else /work/shared/data); skip if absent."""
    folder = Path(os.environ.get("TAA_DATA", "/work/shared/data"))
    missing = [name for name in MULTI30K_FILES if not (folder / "multi30k" / name).is_file()]
    if missing:
        pytest.skip(f"Multi30k not found in {folder}/multi30k (missing {', '.join(missing)}); set TAA_DATA")
    return folder
