"""Reading sentence-per-line corpora: exact text, and one clear line for every bad file."""

import gzip
import hashlib

import pytest

from taa.data.text import DataError, read_lines, read_parallel


def write(path, data: bytes):
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as out:
            out.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["corpus.txt", "corpus.txt.gz"])
def test_read_lines_gives_the_text_of_each_line(tmp_path, name):
    path = write(tmp_path / name, "Ein Mann läuft.\nZwei  Hunde\r\nletzte Zeile ohne Ende".encode())
    assert read_lines(path) == ["Ein Mann läuft.", "Zwei  Hunde", "letzte Zeile ohne Ende"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError) as error:
        read_lines(tmp_path / "nope.de.gz")
    assert str(error.value) == f"{tmp_path / 'nope.de.gz'}: no such file"
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
@pytest.mark.parametrize("name", ["c.txt", "c.txt.gz"])
def test_empty_line_is_named_with_its_number(tmp_path, name, blank):
    path = write(tmp_path / name, f"eins\nzwei\n{blank}\nvier\n".encode())
    with pytest.raises(DataError) as error:
        read_lines(path)
    assert str(error.value) == f"{path}, line 3: empty line"
    assert read_lines(path, allow_empty=True) == ["eins", "zwei", blank, "vier"]


@pytest.mark.parametrize("name", ["c.txt", "c.txt.gz"])
def test_invalid_utf8_is_named_with_its_line(tmp_path, name):
    path = write(tmp_path / name, "eins\nzwei\n".encode() + b"dr\xffei\nvier\n")
    with pytest.raises(DataError) as error:
        read_lines(path)
    message = str(error.value)
    assert message.startswith(f"{path}, line 3: invalid UTF-8 at byte 2")
    assert "\n" not in message


def test_a_gz_name_on_plain_text_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.gz"
    path.write_bytes(b"not compressed\n")
    with pytest.raises(DataError, match=r"plain\.gz: not a valid gzip file"):
        read_lines(path)


def test_truncated_gzip_is_a_clear_error(tmp_path):
    full = gzip.compress(("Ein Satz.\n" * 1000).encode())
    path = tmp_path / "cut.de.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"cut\.de\.gz: not a valid gzip file"):
        read_lines(path)


def test_read_parallel_pairs_line_i_with_line_i(tmp_path):
    source = write(tmp_path / "a.de", "Hallo\nJa\n".encode())
    target = write(tmp_path / "a.en.gz", "Hello\nYes\n".encode())
    assert read_parallel(source, target) == [("Hallo", "Hello"), ("Ja", "Yes")]


def test_differing_line_counts_name_both_files_and_counts(tmp_path):
    source = write(tmp_path / "a.de", b"eins\nzwei\ndrei\n")
    target = write(tmp_path / "a.en", b"one\ntwo\n")
    with pytest.raises(DataError) as error:
        read_parallel(source, target)
    message = str(error.value)
    assert f"{source} has 3 lines" in message and f"{target} has 2" in message
    assert "\n" not in message


def test_reading_writes_nothing(tmp_path):
    source = write(tmp_path / "a.de.gz", b"eins\nzwei\n")
    target = write(tmp_path / "a.en", b"one\ntwo\n")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    read_parallel(source, target)
    with pytest.raises(DataError):
        read_parallel(source, tmp_path / "missing.en")
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()} == before


def test_multi30k_val_is_read_byte_for_byte(data_dir):
    """The decompressed sha256 from shared/data/README.md: reading loses and adds nothing."""
    lines = read_lines(data_dir / "multi30k" / "val.de.gz")
    text = "".join(line + "\n" for line in lines).encode()
    assert hashlib.sha256(text).hexdigest() == "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660"
    assert len(read_parallel(data_dir / "multi30k" / "val.de.gz", data_dir / "multi30k" / "val.en.gz")) == 1014
