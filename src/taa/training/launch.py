"""Starting a run on several processes: ``taa train RECIPE --nproc N`` launches ``torchrun``.

torchrun (``torch.distributed.run``) starts ``nproc`` copies of ``taa train`` on this machine,
gives each its rank in environment variables, watches them, and stops them all as soon as
one fails. ``taa train --nproc N`` is the same as ``torchrun --nproc_per_node N -m taa
train ...``: taa calls torchrun's launcher itself, with these settings:

- one machine: a rendezvous on this machine (torchrun's ``--standalone``);
- several (``--nnodes M``): each machine runs the same command with its ``--node-rank``
  (0 .. M-1), and ``--rdzv-endpoint HOST:PORT`` names machine 0, where the processes meet
  (a static rendezvous, torchrun's ``--master_addr``/``--master_port``);
- no restarts: a process that fails ends the run, and ``--resume`` continues it from its
  last state;
- each process gets an equal part of the CPU cores for its kernels (``OMP_NUM_THREADS``),
  unless the environment sets it.

A run that fails is one line naming the process that failed first, its exit status or
signal; that process printed its own error above. This module imports torch only when it
launches.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Sequence
from typing import Optional

from taa.config import ConfigError

# The exit status of a process that stops because another one failed (a collective whose
# peer is gone, or a failure the first process reports too): the launcher blames another.
FOLLOWER_STATUS = 3

# The most processes one machine may start (a typo such as --nproc 800 would fork that many).
MAX_NPROC = 64


def process_rank() -> int:
    """This process's rank under torchrun (``RANK``), 0 outside it."""
    value = os.environ.get("RANK", "0") if under_torchrun() else "0"
    return int(value) if value.isdigit() else 0


def process_count() -> int:
    """How many processes train together (``WORLD_SIZE`` under torchrun; 1 otherwise)."""
    value = os.environ.get("WORLD_SIZE", "1") if under_torchrun() else "1"
    return int(value) if value.isdigit() and int(value) > 0 else 1


def under_torchrun() -> bool:
    """Whether torchrun started this process (it sets ``TORCHELASTIC_RUN_ID`` and
    ``LOCAL_RANK``; ``WORLD_SIZE`` alone may be Vertex AI's count of machines)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def watch_launcher(interval: float = 1.0) -> None:
    """In a process torchrun started: if the launcher dies (killed outright, it cannot stop
    its processes), this process gets a SIGTERM within ``interval`` seconds instead of
    training on alone. A daemon thread."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="taa-launcher-watch", daemon=True).start()


def threads_per_process(nproc: int) -> int:
    """An equal part of this machine's CPU cores, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // nproc)


def check_launch(nproc: int, nnodes: int = 1, node_rank: Optional[int] = None,
                 rdzv_endpoint: Optional[str] = None) -> None:
    """One line for launch settings that cannot work, before anything starts."""
    if under_torchrun():
        raise ConfigError("--nproc: this taa train was itself started by torchrun; give --nproc to one of them only")
    if not 1 <= nproc <= MAX_NPROC:
        raise ConfigError(f"--nproc {nproc} must be in 1..{MAX_NPROC}")
    if nnodes < 1:
        raise ConfigError(f"--nnodes {nnodes} must be positive")
    if nnodes > 1:
        if rdzv_endpoint is None or node_rank is None:
            raise ConfigError(f"--nnodes {nnodes}: each machine needs --node-rank (0..{nnodes - 1}) and "
                              "--rdzv-endpoint HOST:PORT (machine 0's address)")
        host, _, port = rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--rdzv-endpoint {rdzv_endpoint!r} must be HOST:PORT")
    if node_rank is not None and not 0 <= node_rank < nnodes:
        raise ConfigError(f"--node-rank {node_rank} must be in 0..{nnodes - 1} (--nnodes {nnodes})")


def launch_training(arguments: Sequence[str], nproc: int, nnodes: int = 1, node_rank: Optional[int] = None,
                    rdzv_endpoint: Optional[str] = None) -> None:
    """Run ``taa train ARGUMENTS`` (the command's arguments but the launch options) on ``nproc`` processes here (on ``nnodes`` machines in all)
    under torchrun's launcher; one ConfigError line when a process fails."""
    check_launch(nproc, nnodes, node_rank, rdzv_endpoint)
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in [*logging.root.manager.loggerDict]:  # torchrun's own reports would repeat ours
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(nproc)))
    if nnodes == 1:  # a rendezvous of this machine's processes, on a free port
        backend, endpoint, configs, run_id = "c10d", "localhost:0", {}, str(uuid.uuid4())
    else:  # machine 0 hosts it; every machine must name the same run
        backend, endpoint, configs, run_id = "static", rdzv_endpoint, {"rank": node_rank}, f"taa-{rdzv_endpoint}"
    config = LaunchConfig(
        min_nodes=nnodes, max_nodes=nnodes, nproc_per_node=nproc, run_id=run_id,
        rdzv_backend=backend, rdzv_endpoint=endpoint, rdzv_configs=configs, max_restarts=0, monitor_interval=0.1,
    )
    command = [sys.executable, "-m", "taa", "train", *arguments]
    from torch.distributed.elastic.multiprocessing.api import SignalException

    try:
        elastic_launch(config, command[0])(*command[1:])
    except ChildFailedError as error:
        raise ConfigError(f"training on {nproc * nnodes} processes failed: {describe_failure(error, nnodes)}") from None
    except (SignalException, KeyboardInterrupt) as error:
        how = getattr(getattr(error, "sigval", None), "name", "SIGINT")
        raise ConfigError(f"training on {nproc * nnodes} processes stopped by {how}: the processes were stopped; "
                          "the last state saved resumes (--resume)") from None


def describe_failure(error, nnodes: int = 1) -> str:
    """The process that failed first, in words: its rank and how it ended. A process that
    stopped because another failed (:data:`FOLLOWER_STATUS`, or the launcher's SIGTERM) is
    named only when no other failed."""
    followers = (FOLLOWER_STATUS, -signal.SIGTERM, 128 + signal.SIGTERM)
    failures = error.failures
    causes = {rank: failure for rank, failure in failures.items() if failure.exitcode not in followers}
    if not causes and nnodes > 1:
        return ("a process on another machine failed first (its error is in that machine's output); this machine's "
                "processes were stopped")
    causes = causes or failures
    rank = min(causes, key=lambda r: (causes[r].timestamp, r))
    failure = causes[rank]
    code = failure.exitcode
    if code is not None and code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with status {code}"
    return f"process {rank} {how} (its error, if it printed one, is above); the others were stopped"
