"""Opening a weights file that may be damaged, or not safetensors at all: one line says what is wrong.

safetensors refuses a bad file in its own terms ("header too large", "incomplete
metadata, file not fully covered"), which name neither the file nor what happened to
it. Every reader of weights in taa opens them here, so each way a file goes wrong reads
the same, naming the file: an empty file, a pickle (``torch.save``) under a safetensors
name, a file cut short, bytes of something else, a header that is not safetensors' JSON,
tensors of the wrong kind (integers where the model has floating-point weights), values
that are not finite (nan or inf: :func:`check_finite`). Nothing is ever unpickled: a
pickle is recognised by its first bytes.

The format (safetensors' specification): 8 bytes, the little-endian length N of a JSON
header; N bytes of JSON mapping each tensor's name to its ``dtype``, ``shape`` and
``data_offsets`` [begin, end) into the bytes that follow; then those bytes.

This module imports no framework: ``framework`` is safetensors' name for the arrays to
read (``"np"``, ``"pt"``, ``"flax"``).
"""

from __future__ import annotations

import json
import pickletools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taa.folders import CheckpointError

# safetensors' names of the floating-point dtypes: what a model's weights are stored as.
FLOATING_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
_HEADER_LENGTH = 8  # bytes: the little-endian length of the JSON header
_ZIP = b"PK\x03\x04"  # torch.save writes a zip archive holding a pickle
_PROTO = 0x80  # the opcode that starts a pickle of protocol 2 and later (older torch.save), then the protocol
_PICKLE_PROTOCOLS = range(2, 6)
_NOT_UNPICKLED = "taa reads safetensors only and never unpickles weights"


def problem(path: str | Path) -> str:
    """What is wrong with a file safetensors refused to open, in words (the file's name is
    the caller's to put in front)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            head = stream.read(_HEADER_LENGTH)
            length = int.from_bytes(head, "little") if len(head) == _HEADER_LENGTH else None
            fits = length is not None and _HEADER_LENGTH + length <= size
            header = stream.read(length if fits else 1)  # the whole header, or its first byte
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if size == 0:
        return "an empty file (0 bytes), not a safetensors file"
    ends = _tensor_ends(header) if fits else None
    if ends is None:  # no safetensors header: a file of another kind, or one whose header is damaged
        if head.startswith(_ZIP):
            return f"a zip archive (what torch.save writes), not safetensors: {_NOT_UNPICKLED}"
        if _is_pickle(head):
            return f"a pickle, not safetensors: {_NOT_UNPICKLED}"
    if length is None:
        return f"{size} bytes, too short for a safetensors file"
    if not fits:  # a header that starts as safetensors' JSON but runs past the end: cut short
        if header == b"{":
            return f"truncated or damaged: its header claims {length:,} bytes, the file has {size:,} in all"
        return "not a safetensors file (its first bytes are no safetensors header)"
    if ends is None:
        return "a damaged safetensors header (not the JSON of tensor names, dtypes, shapes and offsets)"
    needed = _HEADER_LENGTH + length + max((int(end) for end in ends if isinstance(end, int)), default=0)
    if needed > size:
        return f"truncated: its tensors need {needed:,} bytes, the file has {size:,}"
    return "a damaged safetensors file"


def _tensor_ends(header: bytes) -> list[Any] | None:
    """Where each tensor's bytes end, from a whole safetensors header; None when the header
    is not the JSON of tensor names, dtypes, shapes and offsets."""
    try:
        entries = json.loads(header.decode("utf-8"))
        return [entry["data_offsets"][1] for name, entry in entries.items() if name != "__metadata__"]
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError):
        return None


def _is_pickle(head: bytes) -> bool:
    """The first bytes of a pickle of protocol 2 to 5 (what Python's pickle and an older
    torch.save write): the PROTO opcode, the protocol, then an opcode (protocols 4 and 5
    frame their data: 0x95). A safetensors file whose header length merely ends in 0x80 is
    followed by other bytes, so it is not taken for one."""
    return (len(head) >= 3 and head[0] == _PROTO and head[1] in _PICKLE_PROTOCOLS
            and chr(head[2]) in pickletools.code2op)


@contextmanager
def open_safetensors(path: str | Path, framework: str = "np",
                     error: type[CheckpointError] = CheckpointError) -> Iterator[Any]:
    """``safetensors.safe_open(path, framework)``; a file that is missing, damaged or of
    another kind is one ``error`` (a :class:`~taa.folders.CheckpointError`) naming it and
    what is wrong."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: a folder, not a safetensors file")
    if not path.is_file():
        raise error(f"{path}: no such file")
    try:
        handle = safe_open(str(path), framework=framework)
    except Exception:  # safetensors' own error for any header it cannot read: say what it is instead
        raise error(f"{path}: {problem(path)}") from None
    with handle as weights:
        yield weights


def tensor_dtypes(path: str | Path) -> dict[str, tuple[str, bool]]:
    """Every tensor of a file: its safetensors dtype (``F32``, ``BF16``, ``I64``, ...) and
    whether that is floating-point, read from the header alone."""
    with open_safetensors(path) as weights:
        dtypes = {key: weights.get_slice(key).get_dtype() for key in weights.keys()}
    return {key: (dtype, dtype in FLOATING_DTYPES) for key, dtype in dtypes.items()}


def read_tensors(path: str | Path, framework: str = "np") -> dict[str, Any]:
    """Every tensor of a safetensors file, as ``framework``'s arrays (``"pt"``: torch tensors);
    a floating-point tensor holding nan or inf is one error naming it (:func:`check_finite`)."""
    with open_safetensors(path, framework) as weights:
        tensors = {key: weights.get_tensor(key) for key in weights.keys()}
    check_finite(tensors, path)
    return tensors


def nonfinite_values(array: Any) -> int:
    """How many values of an array are nan or inf (0 for integers): a torch tensor, or an
    array numpy reads (numpy's, JAX's). Counted only when ``isfinite`` finds one: a sound
    array costs one pass."""
    if hasattr(array, "is_floating_point"):  # a torch tensor (torch is not imported here)
        if not array.is_floating_point():
            return 0
        if array.element_size() == 1:  # float8: torch's isfinite does not take every kind of it
            array = array.float()
        finite = array.isfinite()
    else:
        import numpy as np

        finite = np.isfinite(np.asarray(array))  # True throughout for integers
    return 0 if bool(finite.all()) else int((~finite).sum())


def check_finite(arrays: Mapping[str, Any], path: str | Path,
                 error: type[CheckpointError] = CheckpointError) -> None:
    """Raise one ``error`` (a :class:`~taa.folders.CheckpointError`) naming the file ``path``
    and the first of its ``arrays`` that holds nan or inf.

    No weights or optimizer moments of a sound model are infinite, and a run that diverges
    writes none (:class:`~taa.torch.training.Trainer` checks before it saves): such a file
    was damaged after it was written, or by a tool that does not check. Loaded, it would
    turn every output into nan (or crash deep inside decoding), and a resumed run would
    blame itself for diverging; so it is refused where it is read, naming the tensor.
    """
    damaged = [(key, count) for key, array in arrays.items() if (count := nonfinite_values(array))]
    if damaged:
        (key, count), more = damaged[0], len(damaged) - 1
        others = f" (and {more} more tensor{'s' if more > 1 else ''})" if more else ""
        raise error(f"{path}: tensor {key!r} holds {count:,} non-finite value{'s' if count > 1 else ''} "
                    f"(nan or inf){others}; the file is damaged")


def check_floating(found: Mapping[str, tuple[str, bool]], floating: Mapping[str, bool], what: str,
                   error: type[CheckpointError] = CheckpointError) -> None:
    """Raise one ``error`` (a :class:`~taa.folders.CheckpointError`) naming the tensors
    stored as another kind of number than the model holds them: ``found`` maps a key to its
    dtype's name and whether it is floating-point, ``floating`` a key to whether the model's
    tensor is. Widths may differ (float16 weights load into float32: a cast keeps their
    values); keys only one side has are the key check's to name."""
    wrong = sorted(
        f"{key} {found[key][0]} (expected {'floating point' if floating[key] else 'integers'})"
        for key in found.keys() & floating.keys()
        if found[key][1] != floating[key]
    )
    if wrong:
        shown = "; ".join(wrong[:3]) + (f"; ... ({len(wrong)} in all)" if len(wrong) > 3 else "")
        raise error(f"{what}: tensors of the wrong kind: {shown}")
