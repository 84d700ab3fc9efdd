"""The ``taa`` command line: a thin layer over :mod:`taa.api`.

    taa train RECIPE.yaml [--set key=value ...] [--out DIR] [--resume DIR [--resume-changed]] [--overwrite]
              [--tracking mlflow|tensorboard|none] [--tracking-optional] [--framework torch|keras|flax] [--json]
              [--nproc N [--nnodes M --node-rank I --rdzv-endpoint HOST:PORT]]
    taa translate --checkpoint DIR [--beam N] [--max-len N] [--length-penalty A] [--device D]
                  [--framework torch|keras|flax] [SENTENCE ...]
    taa evaluate --checkpoint DIR --source FILE --reference FILE [--beam N] [--length-penalty A] [--device D]
                 [--framework torch|keras|flax] [--json]
    taa evaluate --checkpoint DIR --data FILE [--device D] [--framework torch|keras|flax] [--json]
    taa evaluate --checkpoint DIR --env ENV [--episodes N] [--seed S] [--target-return R[,R...]] [--plot FILE.png]
                 [--json]
    taa classify --checkpoint DIR [--batch-size N] [--device D] [--json] [SENTENCE ...]
    taa viz attention --checkpoint DIR --out FILE.png "sentence"
    taa trajectories --env ENV --out FILE.npz [--episodes N] [--mixture random=R,noisy=N,medium=M,expert=E]
                     [--noise LOW,HIGH] [--sigma S] [--seed S] [--solved R] [--overwrite] [--json]
    taa model-info PRESET [--set key=value ...] [--json]
    taa models [--json]
    taa convert (--from-hf DIR | --to-hf DIR) --out DIR [--overwrite] [--json]
    taa generate --checkpoint DIR (--prompt TEXT | --prompt-ids "ID ...") [--max-new-tokens N] [--sample|--no-sample]
                 [--temperature T] [--top-k K] [--top-p P] [--beam N] [--length-penalty A] [--seed S]
                 [--dtype float32|bfloat16] [--device D] [--framework torch|keras|flax] [--json]
    taa embed --checkpoint DIR [--json] [--dtype float32|bfloat16] [--batch-size N] [--device D]
              [--framework torch|keras|flax] [SENTENCE ...]
    taa vertex-job RECIPE [--image URI] [--machine TYPE] [--accelerator TYPE] [--accelerator-count N] [--replicas N]
                   [--nproc N] [--set key=value ...] [--base-output-dir gs://...] [--data DIR] --out FILE [--overwrite]

Each command parses its options, calls the :mod:`taa.api` function of the same name with
them, and prints what it returns (``--json``: as one JSON value). Frameworks are imported
inside the api functions, so ``taa --help`` stays fast. Bad input (a missing file, an
unknown field, a bad value, a folder of the wrong kind) ends with one line naming it.
Standard output that takes no more ends the command with exit status 1: a full disk with
one line, a pipe whose reader left (``| head``) quietly.
"""

from __future__ import annotations

import errno
import math
import os
import re
import sys
import warnings
from typing import Any, Callable

import click

from taa import __version__, api
from taa.api._common import FRAMEWORKS
from taa.config import ConfigError
from taa.decoding import MAX_BEAM, MAX_LENGTH_PENALTY, SEED_LIMIT
from taa.folders import check_empty_path, strict_json
from taa.training.dtypes import DTYPES


def _call(function: Callable[..., Any], *args: Any, **options: Any) -> Any:
    """``function(*args, **options)``; bad input (what the api raises for it) is one line,
    and so is memory that ran out (:func:`_out_of_memory`)."""
    from taa.data.text import DataError  # (the data package imports NumPy: not for `taa --help`)

    try:
        return function(*args, **options)
    except (ConfigError, DataError) as error:  # a CheckpointError is a ConfigError
        raise click.ClickException(str(error)) from None
    except (MemoryError, RuntimeError) as error:
        message = _out_of_memory(error)
        if message is None:
            raise
        raise click.ClickException(message) from None


# What to lower when a command runs out of memory, by command.
OUT_OF_MEMORY_HINTS = {
    "train": "lower train.batch_size (translation: data.max_tokens) or the model's size (a state the run saved "
             "is whole: resume it)",
    "translate": "lower --beam or --max-len",
    "evaluate": "lower --beam",
    "generate": "lower --beam or --max-new-tokens",
    "classify": "lower --batch-size",
    "embed": "lower --batch-size",
}
# How the frameworks say how much an allocation that failed asked for: torch on a CPU
# ("you tried to allocate 256000000000 bytes"), on a GPU ("Tried to allocate 2.00 GiB").
_ALLOCATION = re.compile(r"tried to allocate (\d+) bytes|tried to allocate ([\d.]+ ?[KMGTP]i?B)", re.IGNORECASE)
_SIZES = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


def _out_of_memory(error: BaseException) -> str | None:
    """One line for memory that ran out (Python's MemoryError, torch's OutOfMemoryError or
    a CPU allocator's RuntimeError): how much was asked for, and what to lower; None for
    any other error. A run's state is written atomically, so the last one saved is whole."""
    text = str(error)
    if not isinstance(error, MemoryError) and not any(
            sign in text.lower() for sign in ("out of memory", "can't allocate memory", "cannot allocate memory")):
        return None
    found, asked = _ALLOCATION.search(text), ""
    if found and found.group(1):  # a number of bytes
        size = int(found.group(1))
        unit, scale = next(((unit, scale) for unit, scale in _SIZES if size >= scale), ("bytes", 1))
        asked = f" (tried to allocate {size / scale:.3g} {unit})"
    elif found:  # already in words
        asked = f" (tried to allocate {found.group(2)})"
    names, context = [], click.get_current_context(silent=True)
    while context is not None and context.parent is not None:  # "viz attention"; the group's own name is taa
        names.insert(0, context.info_name or "")
        context = context.parent
    command = " ".join(["taa", *names])
    hint = OUT_OF_MEMORY_HINTS.get(" ".join(names), "the model does not fit in this machine's memory")
    return f"{command} ran out of memory{asked}: {hint}"


def _echo_json(value: Any) -> None:
    """``value`` as one line of strict JSON: a figure that is not a number (a diverged loss,
    an infinite perplexity) is null, never ``NaN``, which JSON readers refuse."""
    click.echo(strict_json(value))


def _numbers(text: str, option: str) -> list[float]:
    """Comma-separated finite numbers ("100,200.5,-3"), or one line naming the bad one."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise click.BadParameter(f"{part.strip()!r} is not a number", param_hint=option) from None
        if not math.isfinite(value):
            raise click.BadParameter(f"{part.strip()!r} is not a finite number", param_hint=option)
        values.append(value)
    return values


def _lines(sentences: tuple[str, ...]) -> list[str]:
    """The sentences given, else one a line from standard input: UTF-8 text, where a line
    that is not (or holds a NUL byte: binary data), or is empty, is one error naming the line
    (as ``taa evaluate`` refuses an empty line of its files)."""
    from taa.data.text import decode_lines

    if sentences:
        return list(sentences)
    return decode_lines(sys.stdin.buffer, "standard input", allow_empty=False)


def _notify(command: str) -> Callable[[str], None]:
    """What the api says about the input (a sentence cut to the model's length, ...): one
    line on standard error, after the command's name."""
    return lambda line: click.echo(f"taa {command}: {line}", err=True)


class FiniteFloat(click.FloatRange):
    """A number within bounds that is a number. Click's ``FloatRange`` lets ``nan`` through
    (it compares false with every bound) and ``inf`` past an open end; a decoder given
    either fails deep inside, or quietly answers nonsense."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return number


def _read_path(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """A file or folder a command reads, as typed: an empty one is one line naming the
    option (read as text, since click's ``Path(path_type=Path)`` would turn ``''`` into
    ``.``, the working folder, before any check could see it)."""
    if value is not None:
        name = parameter.opts[0] if isinstance(parameter, click.Option) else parameter.human_readable_name
        _call(check_empty_path, value, name, "read")
    return value


# Every path option is text (click.Path() without path_type): the api checks an empty
# --out (check_empty_path, "to write"), _read_path an empty path read.
READ_PATH = click.Path()
JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON value.")
DTYPE_CHOICE = click.Choice(list(DTYPES))
BEAM_SIZE = click.IntRange(1, MAX_BEAM)
# Where a command's model runs; the api checks the name and that the machine has it (one line).
DEVICE = click.option(
    "--device", default="auto", show_default=True, metavar="auto|cpu|cuda|cuda:N|mps",
    help="Where the model runs: auto takes a GPU when there is one (CUDA, else Apple's MPS), else the CPU.")
# Which implementation runs the model: torch (the reference), the Keras 3 port or the Flax NNX port.
FRAMEWORK = click.option(
    "--framework", type=click.Choice(FRAMEWORKS), default="torch", show_default=True,
    help="Run the model in torch, in the Keras 3 port (its backend is KERAS_BACKEND's) or in the Flax NNX port "
         "(JAX); the ports run in float32 where their framework puts them (--device auto).")
LENGTH_PENALTY = click.option(
    "--length-penalty", type=FiniteFloat(0, MAX_LENGTH_PENALTY), default=None,
    help="Beam search's length penalty alpha in ((5 + |Y|) / 6) ** alpha (GNMT; a Hugging Face folder: "
         "|Y| ** alpha, as transformers); default: the checkpoint's.")


# --------------------------------------------------------------------------------------
# Standard output that takes no more
# --------------------------------------------------------------------------------------


class StandardOutputError(Exception):
    """Standard output took no more (a full disk, a pipe whose reader left): the command
    cannot give its answer. Not an OSError, so that nothing on the way mistakes it for the
    failure of a file the command writes itself (a run folder on a full disk)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


class _StandardOutput:
    """``sys.stdout`` while a command runs: an OSError of writing or flushing it (whoever
    writes: click, rich's tables, click's --help) is a :class:`StandardOutputError`.
    Everything else is the stream's own."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as error:
            raise StandardOutputError(error) from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as error:
            raise StandardOutputError(error) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _stop_writing(stream: Any, failure: StandardOutputError) -> None:
    """End the command whose standard output failed, with exit status 1: a pipe whose reader
    left (``taa ... | head -1``) quietly, as Unix commands end; anything else (a full disk)
    in one line on standard error. What is still buffered goes to /dev/null (Python's
    advice for a closed pipe), so the interpreter's last flush fails with no message."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError):  # a stream without a file (a test's): nothing waits to be flushed
        pass
    if failure.error.errno != errno.EPIPE:
        try:
            click.echo(f"taa: cannot write to standard output: {failure}", err=True)
        except OSError:  # standard error took no more either: the exit status says it
            pass
    sys.exit(1)


class _Main(click.Group):
    """The ``taa`` group, whose commands' standard output is watched (:class:`_StandardOutput`)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        stdout = sys.stdout
        sys.stdout = watched = _StandardOutput(stdout)
        try:
            try:
                return super().main(*args, **kwargs)
            finally:
                watched.flush()  # what is still buffered, while a failure can still be told
        except StandardOutputError as failure:
            _stop_writing(stdout, failure)
        finally:
            if sys.stdout is watched:
                sys.stdout = stdout


@click.group(cls=_Main)
@click.version_option(__version__, prog_name="taa")
@click.pass_context
def main(context: click.Context) -> None:
    """taa: Transformer Architecture Adventures."""
    # A warning (a tracking store that went away, a stale lock taken over, a resume with a
    # changed recipe) is one line on standard error, not Python's file:line and source line.
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"taa: warning: {message}\n"
    context.call_on_close(lambda: setattr(warnings, "formatwarning", previous))


# --------------------------------------------------------------------------------------
# taa train
# --------------------------------------------------------------------------------------


@main.command()
@click.argument("recipe", required=False, callback=_read_path)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field, e.g. train.steps=100.")
@click.option("--out", type=click.Path(), default=None,
              help="Run folder (default: runs/<name>; with --resume, the resumed run's).")
@click.option("--resume", type=READ_PATH, callback=_read_path, default=None,
              help="Continue the run saved in this folder (into --out when given).")
@click.option("--resume-changed", "resume_changed", is_flag=True,
              help="With --resume: accept a recipe that differs from the saved run's (the changes are recorded).")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier run in the run folder: its files are set aside when training starts and "
                   "deleted once the new run has saved a state (a run that fails before that puts them back).")
@click.option("--tracking", type=click.Choice(["mlflow", "tensorboard", "none"]), default="mlflow", show_default=True,
              help="Experiment tracking backend. tensorboard writes event files into the run folder's tensorboard/, "
                   "or where AIP_TENSORBOARD_LOG_DIR says; inside a Vertex AI job that sets it, mlflow without "
                   "MLFLOW_TRACKING_URI is tensorboard (MLflow's default store would die with the container).")
@click.option("--tracking-optional", "tracking_optional", is_flag=True,
              help="Train without tracking (one warning) when the tracking store cannot be reached.")
@click.option("--progress/--no-progress", default=True, help="Show the live progress bar.")
@click.option("--framework", type=click.Choice(FRAMEWORKS), default=None,
              help="Train with taa.torch, the Keras port (Keras's backend: KERAS_BACKEND) or the Flax port (JAX); "
                   "default: the recipe's train.framework, torch unless it says otherwise.")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Train on N processes on this machine (torchrun; gloo on CPUs, NCCL on GPUs).")
@click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --nproc: the machines taking part; run the same command on each.")
@click.option("--node-rank", "--node_rank", "node_rank", type=click.IntRange(min=0), default=None,
              help="With --nnodes: this machine's index, 0 on the one --rdzv-endpoint names.")
@click.option("--rdzv-endpoint", "--rdzv_endpoint", "rdzv_endpoint", default=None, metavar="HOST:PORT",
              help="With --nnodes: where machine 0 listens for the others.")
@JSON
def train(recipe: str | None, overrides: tuple[str, ...], out: str | None, resume: str | None, resume_changed: bool,
          overwrite: bool, tracking: str, tracking_optional: bool, progress: bool, framework: str | None,
          nproc: int | None, nnodes: int, node_rank: int | None, rdzv_endpoint: str | None, as_json: bool) -> None:
    """Train the model a RECIPE describes, then evaluate it and save a checkpoint.

    RECIPE is a YAML file or the name of a built-in recipe (copy, translate-multi30k, ...).
    Without one: translate-multi30k-small when Multi30k is found ($TAA_DATA), else copy;
    with --resume DIR, the recipe DIR's run was trained with.

    A run holds its folder (run.lock) until it ends: a second run into it is refused. A
    folder that holds an earlier run is refused too: continue it with --resume, or replace
    it with --overwrite; a folder holding a converted or Hugging Face model, never.
    --resume refuses a recipe that trains differently from the saved run's (one line listing
    the differences) unless --resume-changed is given. A step whose loss or gradient is not
    finite stops the run with one line (train.nonfinite: skip skips it instead).

    --nproc N trains on N processes (torchrun's launcher, started by taa): train.batch_size
    is the whole batch, split between them, so the same recipe gives the same model on any
    number of processes; `torchrun --nproc_per_node N -m taa train RECIPE` does the same.
    """
    from taa.training.launch import process_rank, under_torchrun

    if nproc is not None or nnodes > 1 or node_rank is not None or rdzv_endpoint is not None:
        from taa.training.launch import launch_training

        if nproc is None:
            raise click.ClickException("--nnodes, --node-rank and --rdzv-endpoint go with --nproc N")
        if nnodes == 1 and node_rank is None and rdzv_endpoint is None:  # a Vertex AI job's machines, if any
            from taa.vertex import vertex_cluster

            cluster = _call(vertex_cluster)
            if cluster is not None:
                nnodes, node_rank, rdzv_endpoint = cluster.nodes, cluster.node_rank, cluster.rdzv_endpoint
        arguments = [*([recipe] if recipe is not None else []), *(f"--set={item}" for item in overrides),
                     *(["--out", out] if out is not None else []), *(["--resume", resume] if resume else []),
                     *(["--resume-changed"] if resume_changed else []), *(["--overwrite"] if overwrite else []),
                     "--tracking", tracking, *(["--tracking-optional"] if tracking_optional else []),
                     *([] if progress else ["--no-progress"]), *(["--json"] if as_json else []),
                     *(["--framework", framework] if framework else [])]
        if (node_rank or 0) == 0:  # a bad setting is one line here, not one from each process
            from taa.api.training import check_train

            _call(check_train, recipe, overrides=overrides, out=out, resume=resume, resume_changed=resume_changed,
                  overwrite=overwrite, processes=nproc, framework=framework)
        _call(launch_training, arguments, nproc, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)
        return
    options = dict(overrides=overrides, out=out, resume=resume, resume_changed=resume_changed, overwrite=overwrite,
                   tracking=tracking, tracking_optional=tracking_optional, progress=progress, framework=framework)
    if under_torchrun():
        result = _train_process(lambda: api.train(recipe, **options), process_rank())
        if result is None:  # a process other than rank 0: rank 0 prints the run's figures
            return
    else:
        result = _call(api.train, recipe, **options)
    if as_json:
        _echo_json(result)
    else:
        _print_summary(result)


def _train_process(run: Callable[[], dict[str, Any]], rank: int) -> dict[str, Any] | None:
    """``taa train`` in one of the processes torchrun started: ``run()``, with the errors of
    several processes told once. Rank 0 says what every process meets alike (a divergence,
    a damaged state: the others leave quietly), another rank only what is its own, naming
    itself (``Error: process 1: ...``); a process whose peer is gone (a collective that
    failed because another process died) leaves quietly with
    :data:`~taa.training.launch.FOLLOWER_STATUS`, so the launcher names the process that
    failed first. Warnings come from rank 0 alone. SIGTERM (torchrun stopping its processes)
    ends the run as Ctrl-C does: the run folder's lock is released. Returns what
    ``api.train`` returned on rank 0, None on the others.

    A bad input another rank meets (a state folder, a data file) is usually rank 0's too:
    such a rank waits :data:`FOLLOWER_GRACE_SECONDS` first, in which the launcher stops it
    when rank 0 failed alike, and only then tells its own (a machine whose run folder lacks
    the state the others resume from, when the folder is not shared)."""
    import signal
    import time

    from taa.data.text import DataError
    from taa.training.divergence import DivergenceError
    from taa.training.launch import watch_launcher

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    watch_launcher()  # a launcher killed outright: stop too
    try:
        from taa.torch.training.distributed import join

        join()  # first: a process that fails from here on is noticed by the others
    except Exception as error:
        if _peer_lost(error):
            _leave_as_follower()
        raise
    if rank:
        warnings.simplefilter("ignore")
    try:
        result = run()
    except KeyboardInterrupt:  # Ctrl-C reaches every process: the launcher says it once
        sys.exit(128 + signal.SIGINT)
    except DivergenceError as error:  # decided on sums over every process: the same on each
        if rank:
            _leave_as_follower()
        raise click.ClickException(str(error)) from None
    except (ConfigError, DataError) as error:  # a damaged state, a missing file: likely rank 0's too
        if rank:  # rank 0 tells it, and the launcher stops this process meanwhile; else it is this one's own
            time.sleep(FOLLOWER_GRACE_SECONDS)
            raise click.ClickException(f"process {rank}: {error}") from None
        raise click.ClickException(str(error)) from None
    except Exception as error:
        if _peer_lost(error):
            _leave_as_follower()
        message = _out_of_memory(error) if isinstance(error, (MemoryError, RuntimeError)) else None
        if message is None:
            raise
        raise click.ClickException(f"process {rank}: {message}" if rank else message) from None
    return None if rank else result


# How long a process that stops because of another's failure waits before it exits, so that
# the launcher sees the failure that caused it first (the launcher stops it meanwhile).
FOLLOWER_GRACE_SECONDS = 3.0


def _leave_as_follower() -> None:
    """Exit quietly with :data:`~taa.training.launch.FOLLOWER_STATUS`, after the grace period."""
    import time

    from taa.training.launch import FOLLOWER_STATUS

    time.sleep(FOLLOWER_GRACE_SECONDS)
    sys.exit(FOLLOWER_STATUS)


# What a collective says when a process it waited for has gone (gloo's and the store's words).
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Connection refused",
             "failed to recv", "Socket Timeout")


def _peer_lost(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another process died."""
    import torch.distributed as dist

    return isinstance(error, dist.DistError) or (isinstance(error, RuntimeError)
                                                  and any(words in str(error) for words in PEER_LOST))


def _print_summary(result: dict[str, Any]) -> None:
    """The run's figures (what :func:`taa.api.train` returns), rounded (4 significant digits,
    integers with separators), lists and texts shortened to a line, and why training stopped
    in words."""
    import math

    from rich.console import Console
    from rich.table import Table

    def figure(value) -> str:
        if value is None:  # a figure that could not be computed (every step of its interval skipped)
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:,.0f}" if math.isfinite(value) and abs(value) >= 1000 else f"{value:.4g}"
        if isinstance(value, (list, tuple)):
            if not value:
                return "-"
            shown = ", ".join(figure(v) for v in value[:3])
            return f"{shown}, ... ({len(value)} in all)" if len(value) > 3 else shown
        if isinstance(value, dict):
            return ", ".join(f"{k} {figure(v)}" for k, v in value.items())
        text = " ".join(str(value).split())  # a text sample on one line
        return text if len(text) <= 60 else text[:57] + "..."

    table = Table(title=f"taa train: {result['name'] or result['task']}", show_header=False)
    for key, value in result["metrics"].items():
        table.add_row(key, result["stopped"] if key == "stop_reason" else figure(value))
    table.add_row("checkpoint", result["checkpoint"])
    Console().print(table)


# --------------------------------------------------------------------------------------
# taa models, taa model-info, taa convert
# --------------------------------------------------------------------------------------


@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list, a row per family.")
def models(as_json: bool) -> None:
    """The model families taa knows: presets, tasks, frameworks and Hugging Face classes."""
    rows = api.models()
    if as_json:
        _echo_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="taa models", show_lines=True)
    for column in ("family", "presets", "tasks", "frameworks", "HF architectures"):
        table.add_column(column, overflow="fold")  # a narrow terminal wraps names, never cuts them
    for row in rows:
        table.add_row(row["family"], "\n".join(row["presets"]), "\n".join(row["tasks"]) or "-",
                      ", ".join(row["frameworks"]), "\n".join(row["hf_architectures"]) or "-")
    Console().print(table)


@main.command()
@click.option("--env", required=True, help="The gymnasium environment (CartPole-v1 and Pendulum-v1 have experts).")
@click.option("--out", type=click.Path(), required=True, help="The .npz file to write.")
@click.option("--episodes", type=click.IntRange(min=1), default=1000, show_default=True, help="Episodes to generate.")
@click.option("--mixture", default="random=0.2,noisy=0.15,medium=0.5,expert=0.15", show_default=True,
              help="Each policy kind's share: random, noisy (the expert with random actions), medium (a scripted "
                   "controller that fails its own way), expert.")
@click.option("--noise", default="0.3,0.7", show_default=True,
              help="Noisy episodes: the range their probability of a random action is drawn from.")
@click.option("--sigma", type=FiniteFloat(min=0), default=0.3, show_default=True,
              help="Noisy continuous episodes: Gaussian noise of up to this share of the action range.")
@click.option("--seed", type=click.IntRange(0, SEED_LIMIT - 1), default=0, show_default=True,
              help="Seeds the episodes and the noise.")
@click.option("--solved", type=FiniteFloat(), default=None,
              help="Also report the share of episodes at or above this return.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def trajectories(env: str, out: str, episodes: int, mixture: str, noise: str, sigma: float, seed: int,
                 solved: float | None, overwrite: bool, as_json: bool) -> None:
    """Generate offline trajectories of ENV from policies of mixed quality, as a .npz file
    (the layout of taa.data.trajectories), for the offline_rl task's data.path."""
    shares = {}
    for part in mixture.split(","):
        kind, _, share = part.partition("=")
        shares[kind.strip()] = _numbers(share, "--mixture")[0] if share else math.nan
    summary = _call(api.trajectories, env, out=out, episodes=episodes, mixture=shares,
                    noise=_numbers(noise, "--noise"), sigma=sigma, seed=seed, solved=solved, overwrite=overwrite)
    if as_json:
        _echo_json(summary)
        return
    kinds = ", ".join(f"{count:,} {kind}" for kind, count in summary.get("episodes_by_policy", {}).items())
    click.echo(f"{summary['episodes']:,} episodes ({kinds}), {summary['steps']:,} steps | return mean "
               f"{summary['mean_return']:.2f}, min {summary['min_return']:g}, max {summary['max_return']:g}"
               + (f" | {100 * summary['solved_share']:.1f}% at or above {solved:g}" if solved is not None else ""))
    click.echo(f"wrote {summary['out']}")


@main.command("model-info")
@click.argument("preset")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field, e.g. d_model=256.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def model_info(preset: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Parameter count per component and in total for a PRESET (e.g. vaswani-base, gpt2-small, bert-base, t5-small)."""
    info = _call(api.model_info, preset, overrides=overrides)
    if as_json:
        _echo_json(info)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{preset}: {info['parameters'] / 1e6:.2f}M parameters")
    table.add_column("component")
    table.add_column("parameters", justify="right")
    for name, count in info["components"].items():
        table.add_row(name, f"{count:,}")
    table.add_row("[bold]total", f"[bold]{info['parameters']:,}")
    Console().print(table)


@main.command()
@click.option("--from-hf", "from_hf", type=READ_PATH, callback=_read_path, default=None,
              help="A Hugging Face model folder (config.json + model.safetensors) to convert to a taa folder.")
@click.option("--to-hf", "to_hf", type=READ_PATH, callback=_read_path, default=None,
              help="A taa checkpoint folder (a training run or a converted model) to write for transformers.")
@click.option("--out", type=click.Path(), required=True, help="The folder to write (new or empty).")
@click.option("--overwrite", is_flag=True, help="Replace the model --out holds: once the new one is written, every entry of --out "
              "but hidden ones (.git) goes.")
@JSON
def convert(from_hf: str | None, to_hf: str | None, out: str, overwrite: bool, as_json: bool) -> None:
    """Convert weights between Hugging Face folders and taa checkpoint folders (safetensors only).

    GPT-2 (GPT2LMHeadModel), BERT (BertModel, BertForMaskedLM, BertForSequenceClassification)
    and T5 (T5ForConditionalGeneration). The tokenizer files travel along. --out must be new
    or empty, or hold a model that --overwrite replaces.
    """
    result = _call(api.convert, from_hf=from_hf, to_hf=to_hf, out=out, overwrite=overwrite)
    if as_json:
        _echo_json(result)
        return
    copied = result["tokenizer"]
    tokenizer = f", tokenizer: {', '.join(copied)}" if copied else ", no tokenizer"
    click.echo(f"{result['architecture']} ({result['parameters']:,} parameters){tokenizer}: "
               f"{result['source']} -> {result['out']}")


# --------------------------------------------------------------------------------------
# taa translate, taa evaluate, taa viz attention
# --------------------------------------------------------------------------------------


@main.command()
@click.option("--checkpoint", type=READ_PATH, callback=_read_path, required=True, help="A translation run folder.")
@click.option("--beam", type=BEAM_SIZE, default=None,
              help="Beam size (1 = greedy); default: the recipe's data.beam.")
@click.option("--max-len", type=click.IntRange(min=2), default=None,
              help="Longest output, in tokens (default: source length + the recipe's data.max_extra).")
@LENGTH_PENALTY
@DEVICE
@FRAMEWORK
@click.argument("sentences", nargs=-1)
def translate(checkpoint: str, beam: int | None, max_len: int | None, length_penalty: float | None, device: str,
              framework: str, sentences: tuple[str, ...]) -> None:
    """Translate SENTENCES, or one sentence a line from standard input; one translation a line out.

    Decodes as the run's final test evaluation did (its recipe's beam, length penalty and
    max_extra) unless an option says otherwise.

    A sentence longer than the model reads (its max_length tokens) is refused with one
    line naming it: split it. Outputs stop at the decoder's max_length positions.
    Standard input is read as UTF-8: a line that is not, that holds a NUL byte (binary
    data) or that is empty, is refused with one line naming it; so is an empty SENTENCE.
    """
    for line in _call(api.translate, checkpoint, sentences=_call(_lines, sentences), beam=beam, max_len=max_len,
                      length_penalty=length_penalty, notify=_notify("translate"), device=device,
                      framework=framework):
        click.echo(line)


@main.command()
@click.option("--checkpoint", type=READ_PATH, callback=_read_path, required=True,
              help="A translation run (with --source/--reference), a classifier or a language model (with --data).")
@click.option("--source", type=READ_PATH, callback=_read_path, default=None, help="Source sentences (plain or .gz).")
@click.option("--reference", type=READ_PATH, callback=_read_path, default=None, help="Reference translations.")
@click.option("--data", type=READ_PATH, callback=_read_path, default=None,
              help="A classifier: 'sentence<TAB>label' (SST-2's TSV) or 'label sentence' lines; "
                   "a language model: a text file; an image classifier: a folder holding an IDX images/labels "
                   "pair, a CIFAR-10 binary batch file, or a folder of class subfolders of images.")
@click.option("--plot", type=click.Path(), default=None,
              help="An image classifier: also draw its confusion matrix as this PNG file; a Decision Transformer "
                   "with several --target-return: the achieved return against the target.")
@click.option("--env", default=None,
              help="A Decision Transformer: play this gymnasium environment (e.g. CartPole-v1); '' = the run's.")
@click.option("--episodes", type=click.IntRange(min=1), default=None,
              help="With --env: episodes to play for each target (default 100).")
@click.option("--seed", type=click.IntRange(0, SEED_LIMIT - 1), default=0, show_default=True,
              help="With --env: episode i is reset with seed SEED + i.")
@click.option("--target-return", "target_returns", default=None,
              help="With --env: the return asked for, or several separated by commas (default: the run's, "
                   "the best return of its data).")
@click.option("--beam", type=BEAM_SIZE, default=None,
              help="Beam size (1 = greedy); default: the recipe's data.beam.")
@LENGTH_PENALTY
@DEVICE
@FRAMEWORK
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(checkpoint: str, source: str | None, reference: str | None, data: str | None, plot: str | None,
             env: str | None, episodes: int | None, seed: int, target_returns: str | None,
             beam: int | None, length_penalty: float | None, device: str, framework: str, as_json: bool) -> None:
    """Score a checkpoint on a file, as its task says.

    A translation run, --source and --reference: sacreBLEU (cased and lower-cased) and chrF
    of its translations, decoded as the run's final test evaluation did (its recipe's beam,
    length penalty and max_extra) unless an option says otherwise: on the run's test set the
    figures are its own. A classifier, --data: accuracy, loss and per-label precision, recall
    and F1. A language model, --data: perplexity and loss per token, in windows of its context.
    An image classifier, --data: accuracy, loss and the confusion matrix (rows: the true
    class), drawn as a PNG with --plot. A Decision Transformer, --env: it plays the
    environment, seeded, asking for each --target-return: the mean and spread of the returns;
    with several targets and --plot, the curve of achieved against target return.

    An empty file is refused, and so are a source and a reference of different lengths
    and a source sentence longer than the model reads (its max_length tokens), with one
    line naming the file and line. A classifier cuts a sentence longer than it reads to
    its length, as in training, with one line on standard error saying how many.
    """
    targets = _numbers(target_returns, "--target-return") if target_returns is not None else []
    scores = _call(api.evaluate, checkpoint, source=source, reference=reference, data=data, beam=beam,
                   length_penalty=length_penalty, notify=_notify("evaluate"), device=device, framework=framework,
                   plot=plot, env=env, episodes=episodes, seed=seed, target_returns=targets)
    if as_json:
        _echo_json(scores)
    elif scores.get("task") == "offline_rl":
        for result in scores.get("results", [scores]):
            click.echo(f"{result['env']}: target {result['target_return']:g} | mean return "
                       f"{result['mean_return']:.2f} ± {result['std_return']:.2f} (min {result['min_return']:g}, "
                       f"max {result['max_return']:g}) over {result['episodes']} episodes, seed {result['seed']}")
        if "plot" in scores:
            click.echo(f"wrote {scores['plot']}")
    elif scores.get("task") == "image_classification":
        correct = sum(scores["confusion"][i][i] for i in range(len(scores["confusion"])))
        click.echo(f"accuracy {100 * scores['accuracy']:.2f}% ({correct:,}/{scores['examples']:,} images) | "
                   f"loss {scores['loss']:.4f}")
        width = max(len(name) for name in scores["classes"])
        click.echo("confusion (rows: true class, columns: predicted)")
        for name, row in zip(scores["classes"], scores["confusion"]):
            click.echo(f"  {name:>{width}} " + " ".join(f"{count:5d}" for count in row))
        if "plot" in scores:
            click.echo(f"wrote {scores['plot']}")
    elif scores.get("task") == "classification":
        click.echo(f"accuracy {100 * scores['accuracy']:.2f}% ({scores['correct']:,}/{scores['sentences']:,} "
                   f"sentences) | loss {scores['loss']:.4f}")
        for name, figures in scores["classes"].items():
            click.echo(f"  {name}: precision {figures['precision']:.3f} | recall {figures['recall']:.3f} | "
                       f"F1 {figures['f1']:.3f} | {figures['sentences']:,} sentences")
    elif scores.get("task") == "language_model":
        click.echo(f"perplexity {scores['perplexity']:.2f} | loss {scores['loss']:.4f} per token | "
                   f"{scores['tokens']:,} tokens in windows of {scores['context']}")
    else:
        click.echo(f"BLEU {scores['bleu']:.2f} | BLEU (lower-cased) {scores['bleu_lowercase']:.2f} | "
                   f"chrF {scores['chrf']:.2f} | {scores['sentences']} sentences, beam {scores['beam']}, "
                   f"length penalty {scores['length_penalty']:g}")


@main.group()
def viz() -> None:
    """Pictures of a trained model."""


@viz.command("attention")
@click.option("--checkpoint", type=READ_PATH, callback=_read_path, required=True,
              help="A translation run folder, or a Vision Transformer (an image classification run, a ViT folder).")
@click.option("--out", type=click.Path(), required=True, help="PNG file to write.")
@click.argument("sentence")
def viz_attention(checkpoint: str, out: str, sentence: str) -> None:
    """Encoder self-, decoder self- and cross-attention for SENTENCE, per layer and head.
    A Vision Transformer's checkpoint takes an IMAGE file (PNG, JPEG) instead: its class
    token's attention rollout over the image (attention of every layer, heads averaged,
    the residual counted), drawn over the image."""
    result = _call(api.plot_attention, checkpoint, sentence=sentence, out=out)
    if "translation" in result:
        click.echo(f"{result['translation']}\nwrote {result['out']}")
    else:
        click.echo(f"{result['label']}\nwrote {result['out']}" if result["label"] is not None
                   else f"wrote {result['out']}")


# --------------------------------------------------------------------------------------
# taa generate, taa embed, taa classify
# --------------------------------------------------------------------------------------


@main.command()
@click.option("--checkpoint", type=READ_PATH, callback=_read_path, required=True,
              help="A Hugging Face folder or taa checkpoint of a GPT (continues the prompt) or T5 / translation model.")
@click.option("--prompt", default=None, help="The prompt text (for T5 and translation models: the source).")
@click.option("--prompt-ids", "prompt_ids", default=None, help='The prompt as token ids, e.g. "464 3290 318".')
@click.option("--max-new-tokens", type=click.IntRange(min=0), default=None,
              help=f"New tokens (default: {api.GENERATE_NEW_TOKENS}; an encoder-decoder: its source length + the "
                   f"recipe's data.max_extra); at most {api.GENERATE_MAX_NEW_TOKENS:,}, and an encoder-decoder "
                   "stops at its decoder's max_length positions.")
@click.option("--sample/--no-sample", "sample", default=None,
              help="Sample, or take the most likely token (default: the checkpoint's; a language model run "
                   "samples as its recipe's text sample did).")
@click.option("--temperature", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Sample with this temperature.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Sample among the k most likely tokens.")
@click.option("--top-p", type=FiniteFloat(0, 1, min_open=True), default=None,
              help="Sample from the smallest set of tokens whose probability reaches p (nucleus).")
@click.option("--beam", type=BEAM_SIZE, default=None,
              help="Beam size (1: no beam search); default: the checkpoint's (a translation run's data.beam).")
@LENGTH_PENALTY
@click.option("--seed", type=click.IntRange(0, SEED_LIMIT - 1), default=None,
              help="Seed of the sampler (default: a language model run's train.seed).")
@click.option("--dtype", type=DTYPE_CHOICE, default="float32", show_default=True,
              help="bfloat16 casts the weights once (faster on CPUs with bf16 units).")
@DEVICE
@FRAMEWORK
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (tokens, text) instead of streaming.")
def generate(checkpoint: str, prompt: str | None, prompt_ids: str | None, max_new_tokens: int | None,
             sample: bool | None, temperature: float | None, top_k: int | None, top_p: float | None,
             beam: int | None, length_penalty: float | None, seed: int | None, dtype: str, device: str,
             framework: str, as_json: bool) -> None:
    """Continue a prompt (GPT) or generate from a source (T5, a translation run).

    Decodes as the checkpoint says unless an option says otherwise: a translation run
    with its recipe's beam search (as `taa translate`), a language model run sampling as
    its recipe's text sample did, a Hugging Face folder as transformers would (its
    generation_config.json; beam search with |Y| ** alpha); else greedy. A sampling
    option (--temperature, --top-k, --top-p) samples.

    The text streams to standard output as it is produced, on the KV cache, and ends
    with a newline. When the prompt and the new tokens pass the model's context, one
    line on standard error says so before decoding starts: a decoder-only model then
    slides its context (each further token sees the last max_length tokens), an
    encoder-decoder stops at its decoder's max_length positions. An encoder-decoder's
    source longer than its encoder reads (a Transformer's max_length) is refused with one
    line. A prompt that is not UTF-8 text, or holds a NUL byte, is refused with one line.
    """
    options = dict(prompt=prompt, prompt_ids=prompt_ids, max_new_tokens=max_new_tokens, sample=sample,
                   temperature=temperature, top_k=top_k, top_p=top_p, beam=beam, length_penalty=length_penalty,
                   seed=seed, dtype=dtype, notify=_notify("generate"), device=device, framework=framework)
    if as_json:
        _echo_json(_call(api.generate, checkpoint, **options))
        return
    try:
        _call(api.generate, checkpoint, **options, stream=lambda text: click.echo(text, nl=False))  # click flushes
    except KeyboardInterrupt:  # stopped while streaming: end the line
        click.echo()
        raise SystemExit(130) from None


@main.command()
@click.option("--checkpoint", type=READ_PATH, callback=_read_path, required=True,
              help="A BERT folder with its tokenizer (e.g. all-MiniLM-L6-v2), Hugging Face or taa.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list of vectors.")
@click.option("--dtype", type=DTYPE_CHOICE, default="float32", show_default=True,
              help="bfloat16 casts the weights once (faster on CPUs with bf16 units).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@DEVICE
@FRAMEWORK
@click.argument("sentences", nargs=-1)
def embed(checkpoint: str, as_json: bool, dtype: str, batch_size: int, device: str, framework: str,
          sentences: tuple[str, ...]) -> None:
    """Sentence embeddings of SENTENCES (or of each line of standard input): the mean of BERT's
    last hidden states over real tokens, L2-normalised (Sentence-BERT). One vector a line.

    A sentence longer than the model reads (its positions, or a sentence-transformers
    folder's max_seq_length) is cut to that length, with one line on standard error
    saying how many were cut. Standard input is read as UTF-8: a line that is not, that
    holds a NUL byte (binary data) or that is empty, is refused with one line naming it;
    so is an empty SENTENCE.
    """
    rows = _call(api.embed, checkpoint, sentences=_call(_lines, sentences), dtype=dtype, batch_size=batch_size,
                 notify=_notify("embed"), device=device, framework=framework)
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        click.echo(" ".join(f"{value:.7g}" for value in row))


@main.command()
@click.option("--checkpoint", type=READ_PATH, callback=_read_path, required=True,
              help="A classification run or a Hugging Face BertForSequenceClassification folder (sentences); "
                   "an image classification run or a ViTForImageClassification folder (image files).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list, an object per sentence.")
@DEVICE
@click.argument("sentences", nargs=-1)
def classify(checkpoint: str, batch_size: int, as_json: bool, device: str, sentences: tuple[str, ...]) -> None:
    """The label of each of SENTENCES (or of each line of standard input) and the probability
    of every label: one line per sentence, "label<TAB>probabilities<TAB>sentence". Labels are
    named when the run names them (SST-2: negative, positive), else their ids. An image
    classifier takes image files (PNG, JPEG) instead: "label<TAB>probabilities<TAB>image".

    A sentence longer than the classifier reads (a run's data.max_length, else its
    positions) is cut to that length, as in training, with one line on standard error
    saying how many were cut. Standard input is read as UTF-8: a line that is not, that
    holds a NUL byte (binary data) or that is empty, is refused with one line naming it;
    so is an empty SENTENCE.
    """
    results = _call(api.classify, checkpoint, sentences=_call(_lines, sentences), batch_size=batch_size,
                    notify=_notify("classify"), device=device)
    if as_json:
        _echo_json(results)
        return
    for result in results:
        shown = ", ".join(f"{name} {probability:.3f}" for name, probability in result["probabilities"].items())
        click.echo(f"{result['label']}\t{shown}\t{result.get('sentence', result.get('image'))}")


# --------------------------------------------------------------------------------------
# taa vertex-job
# --------------------------------------------------------------------------------------


@main.command("vertex-job")
@click.argument("recipe")
@click.option("--image", envvar="TAA_VERTEX_IMAGE", default=None,
              help="The pushed image, REGION-docker.pkg.dev/PROJECT/REPOSITORY/taa:TAG (default: $TAA_VERTEX_IMAGE).")
@click.option("--machine", default="n1-standard-8", show_default=True, help="Each machine's Compute Engine type.")
@click.option("--accelerator", default=None, help="Each machine's GPU, as Vertex AI names it: NVIDIA_TESLA_T4, "
              "NVIDIA_L4, NVIDIA_H100_80GB, ... (default: none).")
@click.option("--accelerator-count", "accelerator_count", type=int, default=None,
              help="GPUs a machine (with --accelerator; default 1).")
@click.option("--replicas", type=int, default=1, show_default=True,
              help="Machines: the chief and replicas - 1 workers, one torchrun job.")
@click.option("--nproc", type=int, default=None,
              help="Training processes a machine (default: one a GPU; 1 on several CPU machines).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field, e.g. train.steps=100.")
@click.option("--base-output-dir", "base_output_dir", default=None,
              help="gs://BUCKET/PATH: the run folder (checkpoints/) and the model (model/) go there.")
@click.option("--data", default=None, help="The data folder in the container ($TAA_DATA): gs://BUCKET/PATH or a path.")
@click.option("--out", type=click.Path(), required=True, help="The job spec to write (YAML).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def vertex_job(recipe: str, image: str | None, machine: str, accelerator: str | None, accelerator_count: int | None,
               replicas: int, nproc: int | None, overrides: tuple[str, ...], base_output_dir: str | None,
               data: str | None, out: str, overwrite: bool) -> None:
    """Write a Vertex AI custom training job that trains a built-in RECIPE with taa's image.

    Submit it with gcloud ai custom-jobs create --region=REGION --display-name=NAME --config=FILE.
    The image holds the built-in recipes: RECIPE is one's name (a file of yours goes into
    recipes/ before the image is built). The recipe and --set are checked here first.
    """
    result = _call(api.vertex_job, recipe, image=image, out=out, machine=machine, accelerator=accelerator,
                   accelerator_count=accelerator_count, replicas=replicas, nproc=nproc, overrides=overrides,
                   base_output_dir=base_output_dir, data=data, overwrite=overwrite)
    gpus = f" + {result['accelerator_count']} {result['accelerator']}" if result["accelerator"] else ""
    kept = f"output in {result['base_output_dir']}" if result["base_output_dir"] else \
        "no --base-output-dir: the run is lost with the machines"
    click.echo(f"{result['out']}: {result['recipe']} on {result['replicas']} x {result['machine']}{gpus}; {kept}; "
               f"submit with gcloud ai custom-jobs create --region=REGION --display-name=NAME --config={result['out']}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
