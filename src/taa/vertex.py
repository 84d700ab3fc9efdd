"""Training on Vertex AI: the job taa submits, and what taa reads inside the job's container.

Outside, :func:`job_spec` describes a custom training job as the ``CustomJobSpec`` that
``gcloud ai custom-jobs create --config job.yaml`` takes (the REST API's camelCase form)
and :func:`write_job_spec` writes it. Every machine runs the image's ``taa train RECIPE``;
with more than one machine, or more than one process a machine, ``taa train --nproc N``
starts torchrun:

    workerPoolSpecs[0]   the chief: replicaCount 1, torchrun's node 0
    workerPoolSpecs[1]   the workers: replicaCount replicas - 1, nodes 1 .. replicas - 1

Inside, Vertex tells the container where to write through ``AIP_*`` variables, as
Cloud Storage URIs (``gs://bucket/path``) that Cloud Storage FUSE mounts at
``/gcs/bucket/path`` (:func:`local_path`): :func:`vertex_environment` reads them. The machines
of a distributed job are in ``CLUSTER_SPEC`` (and, for PyTorch, ``MASTER_ADDR``,
``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``): :func:`vertex_cluster` reads them and
:func:`torchrun_arguments` turns them into torchrun's options. :func:`export_model` copies a
finished run's model into ``AIP_MODEL_DIR``.

Nothing here imports a framework, nor Google's client library: the spec is a plain dict.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from taa import folders
from taa.config import ConfigError, parse_overrides

# ------------------------------------------------------------------ the job

# What every machine runs: the image's entrypoint too (Dockerfile), named again in the
# spec so that the job does not depend on how the image was built.
COMMAND = ("taa", "train")
# The container's log is Cloud Logging: no live progress bar. No MLflow store either:
# TensorBoard event files, in AIP_TENSORBOARD_LOG_DIR when the job has a TensorBoard
# instance, else in the run folder (AIP_CHECKPOINT_DIR); the run's figures are its
# metrics.json, in the model folder.
TRAIN_OPTIONS = ("--tracking", "tensorboard", "--no-progress")

DEFAULT_MACHINE = "n1-standard-8"
# The GPUs Vertex AI attaches to a machine (its AcceleratorType names) that taa's CUDA image
# runs on. TPUs are not among them: taa trains with torch on CUDA or the CPU.
ACCELERATORS = (
    "NVIDIA_TESLA_T4", "NVIDIA_TESLA_P4", "NVIDIA_TESLA_P100", "NVIDIA_TESLA_V100",
    "NVIDIA_TESLA_A100", "NVIDIA_A100_80GB", "NVIDIA_L4", "NVIDIA_H100_80GB", "NVIDIA_H100_MEGA_80GB",
    "NVIDIA_H200_141GB", "NVIDIA_B200", "NVIDIA_RTX_PRO_6000",
)
# A Compute Engine machine type: family-kind[-size], lower case (n1-standard-8, a2-highgpu-1g).
_MACHINE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)+")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
DATA_ENV = "TAA_DATA"  # the data folder taa reads (taa.data.multi30k.DATA_ENV)


def job_spec(recipe: str, *, image: str, machine: str = DEFAULT_MACHINE, accelerator: Optional[str] = None,
             accelerator_count: int = 1, replicas: int = 1, nproc: Optional[int] = None,
             overrides: Sequence[str] = (), base_output_dir: Optional[str] = None,
             data: Optional[str] = None) -> dict[str, Any]:
    """A Vertex AI ``CustomJobSpec`` that trains ``recipe`` with ``taa train`` on ``replicas``
    machines of type ``machine``, each with ``accelerator_count`` GPUs of type ``accelerator``
    (None: none), running ``image``.

    ``nproc``: training processes a machine (torchrun's ``--nproc-per-node``); by default
    one a GPU, and on more than one machine at least one, so that every machine joins the
    same torchrun job. ``overrides``: the ``--set key=value`` of ``taa train``.
    ``base_output_dir``: a ``gs://`` folder; Vertex then sets ``AIP_CHECKPOINT_DIR`` (the
    run folder, resumed when a machine restarts) and ``AIP_MODEL_DIR`` (the model) under
    it; without it, what the job writes is lost with its machines. ``data``: the data folder
    (``gs://`` or a path in the image), given to the container as ``$TAA_DATA``.

    A bad argument is one :class:`ConfigError` line naming it.
    """
    if not isinstance(recipe, str) or not recipe.strip():
        raise ConfigError("the recipe is empty: name a built-in recipe (copy, translate-multi30k, ...)")
    _check_image(image)
    if not isinstance(machine, str) or not _MACHINE.fullmatch(machine):
        raise ConfigError(f"--machine {machine!r}: not a machine type (like {DEFAULT_MACHINE}, g2-standard-8, "
                          "a2-highgpu-1g)")
    if accelerator is not None:
        _check_accelerator(accelerator)
    _check_count("--accelerator-count", accelerator_count)
    _check_count("--replicas", replicas)
    if nproc is not None:
        _check_count("--nproc", nproc)
        if accelerator is not None and nproc > accelerator_count:
            raise ConfigError(f"--nproc {nproc} is more than the {accelerator_count} GPU(s) of a machine "
                              "(one process a GPU)")
    elif (accelerator is not None and accelerator_count > 1) or replicas > 1:
        nproc = accelerator_count if accelerator is not None else 1
    parse_overrides(list(overrides))  # key=value each: one line naming a bad one

    args = [recipe]
    for pair in overrides:
        args += ["--set", pair]
    if nproc is not None:
        args += ["--nproc", str(nproc)]
    args += TRAIN_OPTIONS
    container: dict[str, Any] = {"imageUri": image, "command": list(COMMAND), "args": args}
    if data is not None:
        container["env"] = [{"name": DATA_ENV, "value": str(local_path(data, "--data"))}]
    machine_spec: dict[str, Any] = {"machineType": machine}
    if accelerator is not None:
        machine_spec.update(acceleratorType=accelerator, acceleratorCount=accelerator_count)
    pool = {"machineSpec": machine_spec, "replicaCount": 1, "containerSpec": container}
    # The workers: the same machines and command (each finds its place in CLUSTER_SPEC). Copies, so
    # that the YAML file spells each pool out rather than pointing back at the chief's.
    pools = [pool] + ([{**copy.deepcopy(pool), "replicaCount": replicas - 1}] if replicas > 1 else [])
    spec: dict[str, Any] = {"workerPoolSpecs": pools}
    if base_output_dir is not None:
        _check_gcs_uri(base_output_dir, "--base-output-dir")
        spec["baseOutputDirectory"] = {"outputUriPrefix": base_output_dir}
    return spec


def _check_image(image: Any) -> None:
    if not isinstance(image, str) or not image.strip():
        raise ConfigError("no image: give --image URI (the image docker push sent, "
                          "REGION-docker.pkg.dev/PROJECT/REPOSITORY/taa:TAG)")
    if "://" in image or any(character.isspace() for character in image):
        raise ConfigError(f"--image {image!r}: not an image name (like REGION-docker.pkg.dev/PROJECT/REPOSITORY/"
                          "taa:TAG, with no scheme)")


def _check_accelerator(accelerator: Any) -> None:
    if accelerator in ACCELERATORS:
        return
    spelt = str(accelerator).strip().upper().replace("-", "_")
    near = [name for name in ACCELERATORS if spelt in (name, name.removeprefix("NVIDIA_"),
                                                       name.removeprefix("NVIDIA_TESLA_"))]
    if near:
        raise ConfigError(f"--accelerator {accelerator!r}: write it {near[0]} (Vertex AI's name)")
    if spelt.startswith("TPU"):
        raise ConfigError(f"--accelerator {accelerator!r}: taa trains on NVIDIA GPUs or the CPU, not TPUs")
    raise ConfigError(f"--accelerator {accelerator!r} is not a GPU Vertex AI attaches (known: "
                      f"{', '.join(ACCELERATORS)})")


def _check_count(option: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} {value!r}: expected a whole number of at least 1")


def _check_gcs_uri(uri: Any, what: str) -> None:
    bucket = str(uri).removeprefix("gs://").split("/", 1)[0]
    if not isinstance(uri, str) or not uri.startswith("gs://") or not _BUCKET.fullmatch(bucket):
        raise ConfigError(f"{what} {uri!r}: expected a Cloud Storage folder, gs://BUCKET/PATH")


def command_line(recipe: str, *, image: str, machine: str = DEFAULT_MACHINE, accelerator: Optional[str] = None,
                 accelerator_count: Optional[int] = None, replicas: int = 1, nproc: Optional[int] = None,
                 overrides: Sequence[str] = (), base_output_dir: Optional[str] = None,
                 data: Optional[str] = None) -> str:
    """The ``taa vertex-job`` command that writes this spec (``--out`` aside): the comment at
    the top of a spec file, so that the file says how to write it again."""
    words = ["taa", "vertex-job", recipe, "--image", image]
    words += ["--machine", machine] if machine != DEFAULT_MACHINE else []
    words += ["--accelerator", accelerator] if accelerator is not None else []
    words += ["--accelerator-count", str(accelerator_count)] if accelerator_count is not None else []
    words += ["--replicas", str(replicas)] if replicas != 1 else []
    words += ["--nproc", str(nproc)] if nproc is not None else []
    for pair in overrides:
        words += ["--set", pair]
    words += ["--base-output-dir", base_output_dir] if base_output_dir is not None else []
    words += ["--data", data] if data is not None else []
    return shlex.join(words)


def write_job_spec(spec: Mapping[str, Any], path: str | Path, *, overwrite: bool = False,
                   comment: Optional[str] = None) -> Path:
    """Write ``spec`` as the YAML file ``gcloud ai custom-jobs create --config`` takes, under
    ``comment`` (lines of ``# ...``), atomically (:func:`taa.folders.write_file_atomically`).
    An existing file is replaced only with ``overwrite``. Returns the path."""
    path = folders.check_writable_file(path, "--out")
    if path.exists() and not overwrite:
        raise ConfigError(f"--out {path}: the file exists (give --overwrite to replace it)")
    header = "".join(f"# {line}".rstrip() + "\n" for line in comment.splitlines()) if comment else ""
    text = header + yaml.safe_dump(dict(spec), sort_keys=False, default_flow_style=False, width=1000)
    folders.write_file_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    return path


# ------------------------------------------------------------------ inside the container

GCS_MOUNT = Path("/gcs")  # where Cloud Storage FUSE mounts the buckets in a Vertex AI container


def local_path(uri: str, what: str = "") -> Path:
    """Where the container sees ``uri``: ``gs://bucket/path`` is ``/gcs/bucket/path``
    (Cloud Storage FUSE); a plain path stays as it is; another scheme is one line."""
    uri = os.fspath(uri)
    if uri.startswith("gs://"):
        _check_gcs_uri(uri, what or "the Cloud Storage URI")
        return GCS_MOUNT / uri.removeprefix("gs://")
    if "://" in uri or not uri:
        raise ConfigError(f"{what or 'the path'} {uri!r}: expected a path or a gs:// URI")
    return Path(uri)


@dataclass(frozen=True)
class VertexEnvironment:
    """Where Vertex AI has a job write, as paths inside the container (None: not set)."""

    model_dir: Optional[Path]  # AIP_MODEL_DIR: the final model (export_model)
    checkpoint_dir: Optional[Path]  # AIP_CHECKPOINT_DIR: the run folder, kept across restarts
    tensorboard_dir: Optional[Path]  # AIP_TENSORBOARD_LOG_DIR: TensorBoard's event files


VARIABLES = {"model_dir": "AIP_MODEL_DIR", "checkpoint_dir": "AIP_CHECKPOINT_DIR",
             "tensorboard_dir": "AIP_TENSORBOARD_LOG_DIR"}


def vertex_environment(environ: Mapping[str, str] = os.environ) -> Optional[VertexEnvironment]:
    """The folders Vertex AI gives this container, or None outside Vertex AI (no ``AIP_*``
    variable set). A variable that is not a path nor a ``gs://`` URI is one line naming it."""
    if not any(name.startswith("AIP_") for name in environ):
        return None
    paths = {field: local_path(environ[name], name) if environ.get(name) else None
             for field, name in VARIABLES.items()}
    return VertexEnvironment(**paths)


@dataclass(frozen=True)
class VertexCluster:
    """The machines of a distributed job, as torchrun's static rendezvous needs them."""

    nodes: int  # machines in the job
    node_rank: int  # this machine's place: 0 the chief (workerpool0), then the workers in order
    master_addr: str  # the chief's host
    master_port: int  # a port on it for torch.distributed's store

    @property
    def rdzv_endpoint(self) -> str:
        """``HOST:PORT``, as ``taa train --rdzv-endpoint`` and torchrun take it."""
        return f"{self.master_addr}:{self.master_port}"


# What torchrun sets in the processes it starts: there RANK and WORLD_SIZE count processes.
TORCHRUN_VARIABLES = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "GROUP_RANK")


def vertex_cluster(environ: Mapping[str, str] = os.environ) -> Optional[VertexCluster]:
    """The machines of this job (None: one machine, or not on Vertex AI).

    ``CLUSTER_SPEC`` (JSON: ``{"cluster": {"workerpool0": ["host:port"], "workerpool1":
    [...]}, "task": {"type": "workerpool1", "index": 0}}``) says which machines there are and
    which one this is; ``MASTER_ADDR`` and ``MASTER_PORT``, where Vertex sets them, name the
    chief's address, else the chief's entry in the spec does. Without ``CLUSTER_SPEC``,
    Vertex's ``WORLD_SIZE`` (machines) and ``RANK`` (this machine) are read, and only before
    torchrun has started: in the processes it starts they count processes instead.
    """
    text = environ.get("CLUSTER_SPEC")
    if text:
        nodes, rank, chief = _read_cluster_spec(text)
    elif "WORLD_SIZE" in environ and "MASTER_ADDR" in environ:
        started = [name for name in TORCHRUN_VARIABLES if name in environ]
        if started:
            raise ConfigError(f"WORLD_SIZE and RANK count torchrun's processes here ({started[0]} is set): "
                              "read the machines before torchrun starts")
        nodes, rank = _number(environ, "WORLD_SIZE", 1), _number(environ, "RANK", 0)
        chief = ""
    else:
        return None
    if not 0 <= rank < nodes:
        raise ConfigError(f"machine {rank} of {nodes}: not one of the job's machines")
    if nodes == 1:
        return None
    address, port = environ.get("MASTER_ADDR"), environ.get("MASTER_PORT")
    if not address or not port:  # the chief's entry in CLUSTER_SPEC, host:port
        host, _, chief_port = chief.rpartition(":")
        address, port = address or host, port or chief_port
    if not address or not port:
        raise ConfigError("neither MASTER_ADDR and MASTER_PORT nor CLUSTER_SPEC name the chief machine (host:port)")
    return VertexCluster(nodes=nodes, node_rank=rank, master_addr=address,
                         master_port=_number({"MASTER_PORT": port}, "MASTER_PORT", None))


def _read_cluster_spec(text: str) -> tuple[int, int, str]:
    """(machines, this machine's rank, the chief's host:port) from ``CLUSTER_SPEC``. Only the
    chief's and the workers' pools train; a reduction server or evaluator pool is not taa's."""
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        chiefs, workers = list(cluster.get("workerpool0", [])), list(cluster.get("workerpool1", []))
        pool, index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"CLUSTER_SPEC: not a cluster spec ({type(error).__name__}: {error})") from None
    if len(chiefs) != 1:
        raise ConfigError(f"CLUSTER_SPEC: workerpool0 holds {len(chiefs)} machines, not the one chief")
    offsets = {"workerpool0": 0, "workerpool1": 1}
    if pool not in offsets:
        raise ConfigError(f"CLUSTER_SPEC: this machine is in {pool}, a pool taa's jobs do not use "
                          "(workerpool0: the chief, workerpool1: the workers)")
    if not 0 <= index < len(chiefs if pool == "workerpool0" else workers):
        raise ConfigError(f"CLUSTER_SPEC: {pool} has no machine {index}")
    return 1 + len(workers), offsets[pool] + index, str(chiefs[0])


def _number(environ: Mapping[str, str], name: str, default: Optional[int]) -> int:
    value = environ.get(name, "")
    if not value and default is not None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: not a whole number") from None
    if number < 0:
        raise ConfigError(f"{name}={value!r}: not a whole number")
    return number


def torchrun_arguments(environ: Mapping[str, str] = os.environ) -> list[str]:
    """torchrun's options that make this machine one node of the job's machines, or [] on
    one machine: ``--nnodes``, ``--node_rank``, and the chief's address for the static
    rendezvous (node ranks are Vertex's, so the chief is node 0, and its rank 0 process
    writes the run). To read before torchrun starts (:func:`vertex_cluster`)."""
    cluster = vertex_cluster(environ)
    if cluster is None:
        return []
    return [f"--nnodes={cluster.nodes}", f"--node_rank={cluster.node_rank}", "--rdzv_backend=static",
            f"--master_addr={cluster.master_addr}", f"--master_port={cluster.master_port}"]


# ------------------------------------------------------------------ the model

def export_model(run_folder: str | Path, model_dir: str | Path,
                 task_files: Optional[Sequence[str]] = None) -> list[str]:
    """Copy the model of the finished run in ``run_folder`` into ``model_dir`` (made if
    missing): its weights, metrics, training curves, tokenizer and the task's files (``task_files``;
    None: those of the run's task), then its ``recipe.yaml``, the file that makes a folder a
    taa run (:func:`taa.folders.folder_kind`), last. Each file is written atomically, so a
    reader never sees half a file. The training state and best weights stay behind.
    Returns the paths copied, relative to ``model_dir``."""
    run_folder, model_dir = Path(run_folder), Path(model_dir)
    if folders.folder_kind(run_folder) != folders.TAA_RUN or not (run_folder / folders.WEIGHTS).is_file():
        raise folders.CheckpointError(f"{run_folder}: not a finished taa run ({folders.RECIPE} and "
                                      f"{folders.WEIGHTS}): nothing to export")
    if model_dir.exists() and model_dir.resolve() == run_folder.resolve():
        raise ConfigError(f"{model_dir}: the run folder itself; export the model into another folder")
    if task_files is None:
        from taa.tasks.runner import earlier_task_files  # (imports the run's task module)

        task_files = earlier_task_files(run_folder)
    names = [folders.WEIGHTS, folders.METRICS, folders.CURVES, *task_files]
    tokenizer = run_folder / folders.TOKENIZER
    if tokenizer.is_dir():
        names += sorted(str(path.relative_to(run_folder)) for path in tokenizer.rglob("*") if path.is_file())
    names = [name for name in dict.fromkeys(names) if (run_folder / name).is_file()] + [folders.RECIPE]
    folders.check_writable_folder(model_dir, "the model folder")
    for name in names:
        source, target = run_folder / name, model_dir / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            folders.write_file_atomically(target, lambda temporary, source=source: shutil.copyfile(source, temporary))
        except OSError as error:
            raise ConfigError(f"{target}: cannot copy {source} there ({error.strerror or error})") from None
    return names
