"""Run and model folders on disk: the file names, atomic writes, and what kind a folder is.

Three kinds of folder hold a model, each recognised by one file:

- a taa training run (``taa train --out DIR``), by its ``recipe.yaml``:

      model.safetensors, recipe.yaml, metrics.json   the final model
      tokenizer/                                     the task's tokenizer (if it has one)
      training_curves.png                            loss and validation curves
      state/                                         the latest resumable training state (with
                                                     the recipe as given, given_recipe.yaml)
      best/step-N.safetensors                        the best k weights by the validation metric
      resume_changes.json                            what each ``--resume-changed`` changed
      run.lock                                       while a run writes the folder
      .earlier-run/                                  the run ``--overwrite`` replaces, until the
                                                     new run has saved a state (ReplacedRun)

- a converted taa model (``taa convert --from-hf``), by its ``model.yaml`` (the class and
  the model section of a recipe, tagged ``taa.model/1``), with ``model.safetensors`` and
  ``tokenizer/``;
- a Hugging Face folder, by its ``config.json`` (or a sentence-transformers ``modules.json``).

Weights are safetensors only: a folder with only pickled weights (``pytorch_model.bin``,
``*.pt``) is refused, never unpickled. Every problem with a folder is one
:class:`CheckpointError` naming the folder or file.

Files are written atomically: a file goes to a temporary name and is renamed into place;
a folder is filled under a staging name and swapped in with renames, so a kill at any
moment leaves the previous version whole (and :func:`clean_run_folder` removes what it left
behind). Every file and folder gets the mode the user's umask gives a new one. Before a
command writes, its output is checked (:func:`check_writable_folder`, :func:`check_run_folder`,
:func:`check_run_entries`): a run never trains into a folder it could not finish, nor over
another run or model without being asked. Nothing here imports a framework.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from taa.config import ConfigError

# ------------------------------------------------------------------ file names

WEIGHTS = "model.safetensors"  # the model's weights, in every kind of folder
RECIPE = "recipe.yaml"  # a training run: the recipe that built and trained the model
METRICS = "metrics.json"  # a training run: its final figures
TOKENIZER = "tokenizer"  # the tokenizer folder of taa runs and converted models
CURVES = "training_curves.png"  # a training run: loss and validation curves
STATE = "state"  # a training run: the resumable training state (a folder)
TRAINER_STATE = "trainer.json"  # in the state folder: step, data position, kept best weights
OPTIMIZER_TENSORS = "optimizer.safetensors"  # in the state folder: the optimizer's moments
OPTIMIZER_SETTINGS = "optimizer.json"  # in the state folder: its hyper-parameters and scalars
RANDOM_STATE = "rng.safetensors"  # in the state folder: the framework's random generator state
BEST = "best"  # a training run: the best k weights, best/step-N.safetensors
TENSORBOARD = "tensorboard"  # a training run tracked with --tracking tensorboard: TensorBoard's event files
GIVEN_RECIPE = "given_recipe.yaml"  # in the state folder: the run's recipe as given, before the task completed it
RESUME_CHANGES = "resume_changes.json"  # a training run: what each resume with --resume-changed changed
RUN_LOCK = "run.lock"  # a training run in progress: which process, on which host, writes it (run_folder_lock)
MODEL_FILE = "model.yaml"  # a converted model: its class and config
MODEL_FORMAT = "taa.model/1"  # the format tag of model.yaml
HF_CONFIG = "config.json"  # a Hugging Face folder
HF_TOKENIZER = "tokenizer.json"  # a Hugging Face tokenizer (the ``tokenizers`` library's file)
HF_GENERATION_CONFIG = "generation_config.json"  # a Hugging Face folder's decoding settings
SENTENCE_TRANSFORMERS_MODULES = "modules.json"  # a sentence-transformers folder lists its modules
SENTENCE_TRANSFORMERS_CONFIG = "sentence_bert_config.json"  # its max_seq_length
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "*.pt", "*.pth", "*.ckpt", "*.bin")

TAA_RUN, TAA_MODEL, HUGGING_FACE = "taa_run", "taa_model", "hugging_face"  # what folder_kind returns

# What a training run writes in its folder besides its task's own files (Task.files) and
# run.lock: files, and folders. check_run_entries checks them before a run starts;
# ReplacedRun sets them aside for ``taa train --overwrite``.
RUN_FILES = (RECIPE, METRICS, WEIGHTS, CURVES, RESUME_CHANGES)
RUN_FOLDERS = (STATE, f"{STATE}.new", f"{STATE}.old", BEST, TOKENIZER, TENSORBOARD)
EARLIER_RUN = ".earlier-run"  # in a run folder: the run --overwrite replaces, until the new run has a state


class CheckpointError(ConfigError):
    """A folder, or a file in it, cannot be loaded: missing, of the wrong kind, or its weights
    do not fit the model (missing, unexpected or mis-shaped keys). The message is one line
    naming the folder or file. A ConfigError, so every command reports it as a bad setting."""


def best_weights(folder: Path, step: int) -> Path:
    """Where a training run keeps the weights of step ``step`` among its best k."""
    return Path(folder) / BEST / f"step-{step}.safetensors"


# ------------------------------------------------------------------ which kind of folder


def folder_kind(folder: str | Path) -> str:
    """``taa_run``, ``taa_model`` or ``hugging_face``; a one-line error for anything else."""
    folder = Path(folder)
    if not folder.exists():
        raise CheckpointError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder (give the folder that holds the model)")
    if (folder / RECIPE).is_file():
        return TAA_RUN
    if (folder / MODEL_FILE).is_file():
        return TAA_MODEL
    if (folder / HF_CONFIG).is_file() or (folder / SENTENCE_TRANSFORMERS_MODULES).is_file():
        return HUGGING_FACE
    raise CheckpointError(
        f"{folder}: neither a taa checkpoint ({RECIPE} or {MODEL_FILE}) nor a Hugging Face folder ({HF_CONFIG})"
    )


def hugging_face_folders(folder: str | Path) -> list[Path]:
    """``folder`` and, for a sentence-transformers folder, its Transformer module's folder
    (the root itself for all-MiniLM-L6-v2, ``0_Transformer/`` in older ones)."""
    folder = Path(folder)
    folders = [folder]
    modules_file = folder / SENTENCE_TRANSFORMERS_MODULES
    if modules_file.is_file():
        modules = read_json(modules_file)
        if not isinstance(modules, list) or not all(isinstance(module, dict) for module in modules):
            raise CheckpointError(f"{modules_file}: expected a JSON list of modules")
        for module in modules:
            if str(module.get("type", "")).endswith("models.Transformer"):
                inner = folder / module.get("path", "")
                if inner != folder and inner.is_dir():
                    folders.append(inner)
    return folders


def weights_file(folder: str | Path) -> Path:
    """The folder's ``model.safetensors``; a folder with only pickled weights is refused."""
    folder = Path(folder)
    path = folder / WEIGHTS
    if path.is_file():
        return path
    if path.exists():
        raise CheckpointError(f"{path}: not a file (the model's weights are one safetensors file)")
    pickled = sorted({p.name for pattern in PICKLED_WEIGHTS for p in folder.glob(pattern)})
    if pickled:
        raise CheckpointError(
            f"{folder}: only pickled weights ({', '.join(pickled)}); taa reads safetensors only ({WEIGHTS})"
        )
    raise CheckpointError(f"{path}: no such file (the model's weights)")


def weight_mismatches(found: Mapping[str, Sequence[int]], expected: Mapping[str, Optional[Sequence[int]]]) -> list[str]:
    """What keeps weights from loading strictly: every missing, unexpected and mis-shaped key
    (``expected`` None: any shape), as parts of one message; empty when they fit."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(
        f"{key} {tuple(found[key])} != expected {tuple(expected[key])}"
        for key in set(expected) & set(found)
        if expected[key] is not None and tuple(found[key]) != tuple(expected[key])
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped: {'; '.join(misshaped)}")
    return problems


# ------------------------------------------------------------------ reading the descriptions


def read_json(path: Path) -> Any:
    """The value of a JSON file; a file that is missing, not UTF-8 or not JSON is one
    :class:`CheckpointError` naming it (and the line)."""
    from taa import config as cfg

    try:
        return cfg.read_data(path, "json")
    except ConfigError as error:
        raise CheckpointError(str(error)) from None


def finite_json(value: Any) -> Any:
    """``value`` with every float that is not finite replaced by None, through lists, tuples
    (as lists) and dicts. JSON has no inf or nan: Python writes them as ``NaN`` and
    ``Infinity``, which other readers (and ``jq``) refuse, so a figure that is not a number
    (a diverged loss, an interval of only skipped steps) is written as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def strict_json(value: Any, indent: Optional[int] = None) -> str:
    """``value`` as JSON text every reader takes (:func:`finite_json`): what taa writes as
    JSON, to a file or to standard output."""
    return json.dumps(finite_json(value), indent=indent, allow_nan=False)


def _about(path: Path, error: ConfigError) -> CheckpointError:
    """``error`` about the file ``path`` as a CheckpointError, the file named once."""
    message = str(error)
    return CheckpointError(message if message.startswith(str(path)) else f"{path}: {message}")


def load_recipe(folder: str | Path):
    """The :class:`~taa.config.RecipeConfig` of a training run."""
    from taa import config as cfg

    path = Path(folder) / RECIPE
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a taa checkpoint (no {RECIPE})")
    try:
        return cfg.RecipeConfig.from_dict(cfg.read_mapping(path))
    except CheckpointError:
        raise
    except ConfigError as error:
        raise _about(path, error) from None


def load_model_description(folder: str | Path) -> tuple[Any, Optional[str], dict[str, Any]]:
    """A converted model's ``model.yaml``: (its model config, its class name or None, the
    class's options: every other key, such as a BertModel's ``pooler``)."""
    from taa import config as cfg

    path = Path(folder) / MODEL_FILE
    try:
        description = cfg.read_mapping(path)
        if description.get("format") != MODEL_FORMAT:
            raise ConfigError(f"format={description.get('format')!r}, expected {MODEL_FORMAT!r}")
        config = cfg.model_config_from_dict(description.get("model", {}))
        architecture = description.get("architecture")
        if architecture is not None and not isinstance(architecture, str):
            raise ConfigError(f"architecture={architecture!r} should be a class name")
    except ConfigError as error:
        raise _about(path, error) from None
    options = {key: value for key, value in description.items() if key not in ("format", "architecture", "model")}
    return config, architecture, options


def find_state_folder(folder: str | Path) -> Path:
    """The newest complete state folder in a run folder, a state folder itself, or what a kill
    between :func:`write_folder_atomically`'s two renames left (``state.new``, ``state.old``)."""
    folder = Path(folder)
    for candidate in (folder / STATE, folder / f"{STATE}.new", folder / f"{STATE}.old", folder):
        if (candidate / TRAINER_STATE).is_file():
            return candidate
    raise CheckpointError(f"{folder}: no resumable training state ({STATE}/{TRAINER_STATE})")


# ------------------------------------------------------------------ atomic writes


# What a write killed midway leaves: our temporary files and staging folders
# (``.model.safetensors.tmp-k3j_x9ab``, ``.state.tmp-0q2w8e4r``) and those of safetensors,
# which writes a file to ``.tmpAbC123`` beside it and renames that into place.
TEMPORARY = re.compile(r"\.(.+\.tmp-[a-z0-9_]+|tmp[A-Za-z0-9]{6})")
BEST_WEIGHTS = re.compile(r"step-(\d+)\.safetensors")  # a file of best/ (best_weights)


def _umask() -> int:
    """The process's umask. Linux shows it in /proc; elsewhere it is read by setting it and
    setting it back, and for that moment another thread would create files as 0600."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o077)
    os.umask(current)
    return current


def _temporary_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(handle)
    return Path(name)


def write_file_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary_path)`` then rename over ``path``.

    The file gets the mode of any new file, ``0666 & ~umask``: mkstemp makes its file 0600,
    and so does safetensors for the file it renames over the temporary one, so the mode is
    set after ``write``, not before.
    """
    temporary = _temporary_sibling(Path(path))
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_folder_atomically(directory: Path, fill: Callable[[Path], None]) -> Path:
    """``fill(staging)`` then swap the staging folder in for ``directory``.

    The swap is two renames; if a kill falls between them, ``directory.new`` (complete,
    newer) or ``directory.old`` (complete, older) remains, and :func:`find_state_folder`
    finds it.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; a state folder is an ordinary folder
    new, old = directory.with_name(directory.name + ".new"), directory.with_name(directory.name + ".old")
    try:
        fill(staging)
        shutil.rmtree(new, ignore_errors=True)
        staging.rename(new)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    new.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def clean_run_folder(folder: str | Path, best_steps: Optional[Sequence[int]] = None) -> None:
    """Remove what a run killed in ``folder`` left behind, before a run starts there again.

    - temporary files and staging folders (:data:`TEMPORARY`) in the folder and in ``best/``;
    - ``state.new`` and ``state.old`` (:func:`write_folder_atomically` killed between its
      renames): with no ``state/``, the one :func:`find_state_folder` picks becomes
      ``state/``; the other goes;
    - an earlier run that ``--overwrite`` set aside (``.earlier-run/``) and a kill kept
      from settling (:func:`settle_earlier_run`);
    - with ``best_steps`` (the steps a resumed state lists among its best), every weights
      file in ``best/`` it does not list: written before a kill came ahead of the state that
      would have listed it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for parent in (folder, folder / BEST):
        for path in parent.glob(".*") if parent.is_dir() else ():
            if TEMPORARY.fullmatch(path.name):
                _remove(path)
    state, new, old = (folder / f"{STATE}{suffix}" for suffix in ("", ".new", ".old"))
    if not state.exists():
        complete = [candidate for candidate in (new, old) if (candidate / TRAINER_STATE).is_file()]
        if complete:
            complete[0].rename(state)
    if (state / TRAINER_STATE).is_file():
        for leftover in (new, old):
            shutil.rmtree(leftover, ignore_errors=True)
    settle_earlier_run(folder)
    if best_steps is not None and (folder / BEST).is_dir():
        for path in (folder / BEST).iterdir():
            found = BEST_WEIGHTS.fullmatch(path.name)
            if found and int(found.group(1)) not in best_steps:
                path.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------ a run replacing another


# The set-aside folders of the runs this process is training: not leftovers to settle.
_SET_ASIDE_HERE: set[Path] = set()


def _holds_state(folder: Path) -> bool:
    """Whether ``folder`` holds a resumable state (one :func:`find_state_folder` would find)."""
    return any((folder / name / TRAINER_STATE).is_file() for name in (STATE, f"{STATE}.new", f"{STATE}.old"))


class ReplacedRun:
    """The earlier run a new one replaces in ``folder`` (``taa train --overwrite``), set
    aside rather than deleted while the new run has nothing to show, so that a new run that
    fails early (a divergence, an error, Ctrl-C) leaves the earlier run whole.

    Used as ``with ReplacedRun(folder, task_files) as earlier:`` around training, under the
    run's lock. Entering moves the earlier run's files (:data:`RUN_FILES`,
    :data:`RUN_FOLDERS`, ``task_files`` and what a killed write left) into the hidden
    folder :data:`EARLIER_RUN`; other files stay. They are deleted once the folder holds a
    state of the new run (:meth:`replaced`, called as each state is written, and on leaving
    the block); a block left by an exception before that puts them back, the new run's
    files removed. A kill in between leaves the hidden folder: :func:`clean_run_folder`
    settles it at the next start (:func:`settle_earlier_run`)."""

    def __init__(self, folder: str | Path, task_files: Sequence[str] = ()) -> None:
        self.folder = Path(folder)
        self.aside = self.folder / EARLIER_RUN
        self.names = list(dict.fromkeys([*RUN_FILES, *RUN_FOLDERS, *task_files]))

    def __enter__(self) -> ReplacedRun:
        settle_earlier_run(self.folder)  # one left by a killed run comes first
        entries = [self.folder / name for name in self.names] + _temporaries(self.folder)
        entries = [path for path in entries if path.exists() or path.is_symlink()]
        if not entries:
            return self
        moved: list[Path] = []
        try:
            self.aside.mkdir()
            for path in entries:
                path.rename(self.aside / path.name)
                moved.append(path)
        except OSError as error:
            for path in moved:
                (self.aside / path.name).rename(path)
            shutil.rmtree(self.aside, ignore_errors=True)
            raise ConfigError(f"{self.folder}: cannot set the earlier run's files aside "
                              f"({error.strerror or error})") from None
        _SET_ASIDE_HERE.add(self.aside.resolve())
        return self

    def replaced(self) -> None:
        """Delete the earlier run once the folder holds a state of the new run."""
        if self.aside.is_dir() and _holds_state(self.folder):
            shutil.rmtree(self.aside, ignore_errors=True)

    def __exit__(self, kind: Optional[type], error: Optional[BaseException], traceback: Any) -> None:
        try:
            if not self.aside.is_dir():
                return
            if kind is None or _holds_state(self.folder):  # the new run can be resumed or is done
                shutil.rmtree(self.aside, ignore_errors=True)
                return
            try:
                _put_back(self.folder, self.aside)
            except OSError as problem:  # not to hide why the run failed
                warnings.warn(f"{self.aside}: cannot put the earlier run back ({problem.strerror or problem}); "
                              "the next run in this folder does", stacklevel=2)
        finally:
            _SET_ASIDE_HERE.discard(self.aside.resolve())


def settle_earlier_run(folder: str | Path) -> None:
    """What to do with an earlier run that ``--overwrite`` set aside in ``folder`` and a
    killed run left there (:class:`ReplacedRun`): deleted when the folder holds a state of
    the new run (it was replaced), else put back, the new run's files removed (the new run
    left nothing to resume). The set-aside folder of a run this process is training is no
    leftover: left alone. Call it holding the folder's lock."""
    folder = Path(folder)
    aside = folder / EARLIER_RUN
    if not aside.is_dir() or aside.resolve() in _SET_ASIDE_HERE:
        return
    if _holds_state(folder):
        shutil.rmtree(aside, ignore_errors=True)
        return
    try:
        _put_back(folder, aside)
    except OSError as error:
        raise ConfigError(f"{aside}: cannot put back the earlier run that --overwrite set aside "
                          f"({error.strerror or error})") from None


def _put_back(folder: Path, aside: Path) -> None:
    """Remove what a new run wrote in ``folder`` and move the set-aside run's entries back."""
    for path in [folder / name for name in (*RUN_FILES, *RUN_FOLDERS)] + _temporaries(folder):
        if path.exists() or path.is_symlink():
            _remove(path)
    for path in aside.iterdir():
        target = folder / path.name
        if target.exists() or target.is_symlink():
            _remove(target)
        path.rename(target)
    aside.rmdir()


def _temporaries(folder: Path) -> list[Path]:
    """What a killed write left in ``folder`` (:data:`TEMPORARY`)."""
    return [path for path in folder.glob(".*") if TEMPORARY.fullmatch(path.name)] if folder.is_dir() else []


def copy_file(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source``: a hard link where the file system allows
    (a run's files are written by renames, never changed in place, so two folders can share
    one), else a copy written atomically. A copy that fails is one line naming both."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        _link_or_copy(source, target)
    except OSError as error:
        raise ConfigError(f"{target}: cannot copy {source} there ({error.strerror or error})") from None


def copy_folder(source: Path, target: Path) -> None:
    """``target`` becomes a copy of the folder ``source`` (its files linked or copied as by
    :func:`copy_file`), swapped in whole (:func:`write_folder_atomically`)."""
    try:
        write_folder_atomically(target, lambda staging: shutil.copytree(source, staging, dirs_exist_ok=True,
                                                                        copy_function=_link_or_copy))
    except OSError as error:  # shutil.Error too
        raise ConfigError(f"{target}: cannot copy {source} there ({error.strerror or error})") from None


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        write_file_atomically(Path(target), lambda tmp: shutil.copyfile(source, tmp))


def replace_folder(directory: str | Path, fill: Callable[[Path], None]) -> Path:
    """``fill(staging)``, then what ``fill`` wrote takes the place of what ``directory``
    held: until ``fill`` has finished, ``directory`` stays as it was, so a failure leaves
    no half-written model and loses nothing.

    The staging folder is a hidden one inside ``directory`` (``.replacing.tmp-...``), so
    nothing is written beside it (its neighbours may be anything) and the folder itself
    stays (it may be the working folder or a link, and keeps its mode). Once ``fill`` is
    done, the earlier entries move into another hidden folder and are deleted, and the new
    ones move up: renames, so a kill in that moment leaves the earlier entries whole in
    ``.replaced.tmp-...``. Hidden entries (``.git``) are not the model's: they stay.
    """
    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".replacing.tmp-", dir=directory))
    try:
        fill(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:  # a folder made only for this leaves no trace
            shutil.rmtree(directory, ignore_errors=True)
        raise
    earlier = Path(tempfile.mkdtemp(prefix=".replaced.tmp-", dir=directory))
    for path in directory.iterdir():
        if not path.name.startswith("."):
            path.rename(earlier / path.name)
    for path in staging.iterdir():
        path.rename(directory / path.name)
    staging.rmdir()
    shutil.rmtree(earlier, ignore_errors=True)
    return directory


# ------------------------------------------------------------------ before a command writes


def check_folder_name(name: str, field: str = "name") -> str:
    """Refuse, in one line naming ``field``, a name that is not one plain folder name: a
    recipe's ``name`` becomes its run folder, ``runs/<name>``, and a separator, ``..`` or
    an absolute path would put the run anywhere. Returns ``name``."""
    if not name.strip():
        problem = "it is blank"
    elif name in (".", ".."):
        problem = "it names runs/ or the folder above it"
    elif "\0" in name:
        problem = "it holds a NUL character"
    elif any(separator in name for separator in "/\\"):  # the separators of every system
        problem = "it holds a path separator"
    else:
        return name
    raise ConfigError(f"{field}={name!r} is not one plain folder name ({problem}): the run's folder is runs/<{field}>")


def held_model(folder: str | Path) -> Optional[str]:
    """What ``folder`` already holds, in words (``a training run``, ``a converted taa
    model``, ``a Hugging Face model``, ``model weights``), or None: a command that writes a
    model refuses to mix its files with another model's."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if (folder / RECIPE).is_file() or any((folder / name).is_dir() for name in (STATE, f"{STATE}.new",
                                                                                f"{STATE}.old", BEST)):
        return "a training run"
    if (folder / MODEL_FILE).is_file():
        return "a converted taa model"
    if (folder / HF_CONFIG).is_file() or (folder / SENTENCE_TRANSFORMERS_MODULES).is_file():
        return "a Hugging Face model"
    if (folder / WEIGHTS).is_file() or any(next(folder.glob(pattern), None) for pattern in PICKLED_WEIGHTS):
        return "model weights"
    return None


def check_run_folder(folder: str | Path, what: str, resume: Optional[str | Path] = None,
                     overwrite: bool = False) -> None:
    """Refuse, in one line, to train into a folder that holds another run or model: the new
    run's files would mix with the earlier run's (its best weights and state beside the new
    ones) or overwrite a model without a word.

    A training run there is continued with ``--resume`` (``resume`` is ``folder``) or
    replaced with ``--overwrite``; a converted or Hugging Face model is never trained over.
    ``--overwrite`` with ``--resume`` of the same folder is refused: it would delete the
    run being continued. ``what`` names the folder's option (``--out``)."""
    folder = Path(folder)
    label = _label(folder, what)
    continuing = resume is not None and folder.resolve() == Path(resume).resolve()
    if continuing:
        if overwrite:
            raise ConfigError(f"{label}: --overwrite would delete the run --resume continues "
                              "(give another --out to continue it elsewhere)")
        return
    held = held_model(folder)
    if held is None:
        return
    if held == "a training run":
        if not overwrite:
            raise ConfigError(f"{label} holds {held} already: continue it with --resume {folder}, train into "
                              "another --out, or give --overwrite to replace it")
        return
    raise ConfigError(f"{label} holds {held}: train into another --out (--overwrite replaces only a training run)")


def check_run_entries(folder: str | Path, task_files: Sequence[str] = ()) -> None:
    """Refuse, in one line naming it, an entry of ``folder`` that the run could not write:
    a folder where it writes a file (``metrics.json``, ``model.safetensors``, the task's
    files), a file where it writes a folder (``state``, ``best``, ``tokenizer``), or such a
    folder that takes no new file. Checked before training, so that it does not fail at a
    checkpoint or at its end, after the work."""
    folder = Path(folder)
    for name in (*RUN_FILES, *task_files):
        path = folder / name
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise ConfigError(f"{path}: {_kind(path)} where the run writes a file (move it away or train into "
                              "another folder)")
    for name in RUN_FOLDERS:
        path = folder / name
        if not path.exists() and not path.is_symlink():
            continue
        if not path.is_dir():
            raise ConfigError(f"{path}: {_kind(path)} where the run writes a folder (move it away or train into "
                              "another folder)")
        problem = _unwritable(path)  # (names the folder)
        if problem is not None:
            raise ConfigError(problem)


def _kind(path: Path) -> str:
    if path.is_dir():
        return "a folder"
    if path.is_file():
        return "a file"
    return "a broken link" if path.is_symlink() else "not a file or folder"


def check_empty_path(path: str | Path, what: str = "", action: str = "write") -> None:
    """Refuse an empty path (``--out ''``, ``--checkpoint ''``): it would mean the working
    folder, which nobody means by it. ``action`` says what the command does with the path
    (``write``, ``read``). The path must come as given: ``Path("")`` is already ``.``."""
    if os.fspath(path) == "":
        raise ConfigError(f"{what or 'the path'} is empty: name the folder or file to {action} "
                          "(. for the working folder)")


def check_writable_folder(path: str | Path, what: str = "") -> Path:
    """Refuse, in one line, a folder a command cannot write into: ``path`` is a file, lies
    inside a file, or its nearest existing folder takes no new file (permissions, a
    read-only disk; tried, not guessed from the mode bits, which root ignores). Commands
    call it before any work, so a bad ``--out`` fails at once and not after training.
    ``what`` names the option in the message (``--out``). Returns ``path``."""
    check_empty_path(path, what)
    path = Path(path)
    problem = _unwritable(path)
    if problem is not None:
        raise ConfigError(f"{_label(path, what)}: {problem}")
    return path


def check_writable_file(path: str | Path, what: str = "") -> Path:
    """:func:`check_writable_folder` for a file a command writes (a plot): it must not be a
    folder, and its folder (made if missing) must take it. Returns ``path``."""
    check_empty_path(path, what)
    path = Path(path)
    problem = f"{path} is a folder, not a file" if path.is_dir() else _unwritable(path.parent)
    if problem is not None:
        raise ConfigError(f"{_label(path, what)}: {problem}")
    return path


def _label(path: Path, what: str) -> str:
    return f"{what} {path}" if what else str(path)


def _unwritable(folder: Path) -> Optional[str]:
    """Why no file can be written in ``folder`` (made with its parents when missing), or None."""
    existing = folder
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder" if existing.is_file() else f"{existing} is not a folder"
    try:
        handle, name = tempfile.mkstemp(prefix=".write-test-", dir=existing)
    except OSError as error:
        return f"cannot write in {existing} ({error.strerror or error})"
    os.close(handle)
    os.unlink(name)
    return None


@contextmanager
def run_folder_lock(folder: str | Path, foreign_is_stale: bool = False) -> Iterator[Path]:
    """Hold ``folder`` for one training run while the block runs; refused at once, in one
    line, while a live run holds it, so two runs never overwrite each other's files.

    The lock is ``folder/run.lock``, made with O_CREAT|O_EXCL (of two processes only one
    can make it), holding the owner's pid, host and start time (and, on Linux, which
    process that pid was: :func:`_process_identity`). A lock whose owner is gone is stale
    and taken over with one warning: its pid is not alive on this host, or that pid now
    names another process (a reused pid). A lock written on another host cannot be checked
    from here: it is refused, naming the file to delete once that run is gone. The lock
    goes when the block ends, on an exception or Ctrl-C too; a killed run leaves a stale
    one. A folder the lock made and nothing else filled is removed with it. A ``run.lock``
    that is not a file (a folder) is no lock to take over: refused in one line, left as it is.
    ``foreign_is_stale``: a lock from another host is stale too (a job that restarts on a
    new machine, which only starts once the old one is gone: Vertex AI's).
    """
    folder = Path(folder)
    made = not folder.exists()
    lock = folder / RUN_LOCK
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now().astimezone().isoformat(timespec="seconds"),
              "process": _process_identity(os.getpid())}
    if (lock.exists() or lock.is_symlink()) and not lock.is_file():  # never a lock: taking it over cannot end
        raise ConfigError(f"{lock}: {_kind(lock)}, not a run's lock file (move it away or train into another folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _acquire(lock, record, foreign_is_stale)
    except OSError as error:
        raise ConfigError(f"{lock}: cannot lock the run folder ({error.strerror or error})") from None
    try:
        yield lock
    finally:
        if _read_lock(lock) == record:  # still ours (not taken over by mistake)
            lock.unlink(missing_ok=True)
        if made:
            try:
                folder.rmdir()  # only when empty: a run that failed before writing anything
            except OSError:
                pass


# An unreadable lock younger than this is being written by its owner; older, its owner died
# between making it and writing it.
LOCK_WRITE_SECONDS = 10.0


def _acquire(lock: Path, record: dict[str, Any], foreign_is_stale: bool = False) -> None:
    for _ in range(3):  # a stale lock taken over, then made ours; or a race lost to another process
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = _read_lock(lock)
            _refuse_live_holder(lock, holder, foreign_is_stale)
            _take_over(lock, holder)
            continue
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(record, file)
        return
    raise ConfigError(f"{lock.parent}: another run is starting in this folder")


def _read_lock(lock: Path) -> Optional[dict[str, Any]]:
    """The lock's record; None when it is gone or cannot be read (being written, or garbled)."""
    try:
        record = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"pid", "host", "started"} <= set(record) else None


def check_no_live_run(folder: str | Path) -> None:
    """Refuse, in one line, to write into a folder a live run holds (its ``run.lock``, see
    :func:`run_folder_lock`): a command that replaces a folder (``taa convert --overwrite``)
    would delete the files the run is writing. A stale lock is no obstacle."""
    lock = Path(folder) / RUN_LOCK
    if lock.is_file():
        _refuse_live_holder(lock, _read_lock(lock))


def _refuse_live_holder(lock: Path, holder: Optional[dict[str, Any]], foreign_is_stale: bool = False) -> None:
    """A one-line ConfigError while the lock's owner may still run; nothing when it is stale
    (``foreign_is_stale``: a lock from another host is)."""
    folder = lock.parent
    if holder is None:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile
        if age < LOCK_WRITE_SECONDS:
            raise ConfigError(f"{folder}: another run is starting in this folder")
        return
    who = f"pid {holder['pid']}, started {holder['started']}"
    if holder["host"] != socket.gethostname():
        if foreign_is_stale:
            return
        raise ConfigError(f"{folder}: a run on host {holder['host']} ({who}) holds this folder; "
                          f"if it has ended, delete {lock}")
    if _process_alive(holder):
        raise ConfigError(f"{folder}: another taa run ({who}) is writing this folder; "
                          "wait for it to end or write to another folder")


def _process_alive(holder: dict[str, Any]) -> bool:
    """Whether the lock's pid still runs the process that wrote it (on this host)."""
    pid = holder["pid"]
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would signal it: take the lock as held
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    written, now = holder.get("process"), _process_identity(pid)
    return written is None or now is None or written == now


def _process_identity(pid: int) -> Optional[str]:
    """Which process ``pid`` is, on Linux: the boot it runs in and its start, in clock ticks
    since that boot (``/proc``: no wall clock, so a clock set forward cannot age it). A
    reused pid has another identity. None where /proc does not tell."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{boot}/{start}"


def _take_over(lock: Path, stale: Optional[dict[str, Any]]) -> None:
    """Move a stale lock out of the way (a rename: of two processes taking it over, one
    moves it). If what was moved is not the lock judged stale, another process has just
    made it: it is put back, and the next try finds its owner alive."""
    aside = lock.with_name(f".{lock.name}.stale-{os.getpid()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    moved = _read_lock(aside)
    if moved != stale:
        try:
            os.link(aside, lock)
        except OSError:
            pass
        aside.unlink(missing_ok=True)
        return
    aside.unlink(missing_ok=True)
    owner = f"pid {stale['pid']}, started {stale['started']}" if stale is not None else "unreadable"
    warnings.warn(f"{lock}: taking over the lock of a run that no longer runs ({owner})", stacklevel=5)


def save_final_model(directory: str | Path, recipe: Any, metrics: Optional[dict[str, Any]],
                     write_extra: Optional[Callable[[Path], None]], write_weights: Callable[[Path], None]) -> Path:
    """A run's final model into ``directory``: the task's files (``write_extra``), the recipe,
    the metrics, then the weights (``write_weights(path)``, the framework's writer) last, so a
    folder with weights is complete. Each file is replaced atomically; other contents of the
    folder (``state/``, ``best/``) are left alone."""
    from taa import config as cfg

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if write_extra is not None:
        write_extra(directory)
    write_file_atomically(directory / RECIPE, lambda tmp: tmp.write_text(cfg.dumps(recipe, "yaml")))
    figures = strict_json(metrics or {}, indent=2) + "\n"  # null, not NaN
    write_file_atomically(directory / METRICS, lambda tmp: tmp.write_text(figures))
    write_weights(directory / WEIGHTS)
    return directory
