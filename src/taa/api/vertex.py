"""``taa vertex-job``: a Vertex AI custom training job that runs ``taa train`` in taa's image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from taa import config as cfg
from taa import vertex
from taa.api._common import PathLike
from taa.api.training import builtin_recipe


def vertex_job(recipe: PathLike, *, image: Optional[str], out: PathLike, machine: str = vertex.DEFAULT_MACHINE,
               accelerator: Optional[str] = None, accelerator_count: Optional[int] = None, replicas: int = 1,
               nproc: Optional[int] = None, overrides: Sequence[str] = (), base_output_dir: Optional[str] = None,
               data: Optional[str] = None, overwrite: bool = False) -> dict[str, Any]:
    """Write ``out``, the job spec ``gcloud ai custom-jobs create --config`` takes, for a run of
    ``recipe`` with ``overrides`` (the options are :func:`taa.vertex.job_spec`'s).

    The job runs ``taa train RECIPE`` in the image, which holds taa's built-in recipes (the
    repository's ``recipes/`` when the image was built) and nothing else of this machine:
    ``recipe`` is a built-in recipe's name, or a file among them (taken by its name). The
    recipe, with ``overrides``, is loaded here first, so that a bad field fails now and not
    on Google's machines. ``out`` is replaced only with ``overwrite``.

    Returns ``{"out", "recipe", "image", "replicas", "machine", "accelerator",
    "accelerator_count", "nproc", "base_output_dir", "spec"}``.
    """
    if accelerator_count is not None and accelerator is None:
        raise cfg.ConfigError("--accelerator-count goes with --accelerator TYPE (the GPUs to count)")
    name = _builtin_name(recipe)
    config = cfg.RecipeConfig.load(builtin_recipe(name), list(overrides))  # every field checked, --set included
    options = dict(image=image, machine=machine, accelerator=accelerator, replicas=replicas, nproc=nproc,
                   overrides=list(overrides), base_output_dir=base_output_dir, data=data)
    spec = vertex.job_spec(name, **options, accelerator_count=1 if accelerator_count is None else accelerator_count)
    arguments = spec["workerPoolSpecs"][0]["containerSpec"]["args"]
    processes = int(arguments[arguments.index("--nproc") + 1]) if "--nproc" in arguments else 1
    _check_device(config.train.device, accelerator, processes)
    comment = (f"A Vertex AI CustomJobSpec for gcloud ai custom-jobs create --config FILE, written by\n"
               f"{vertex.command_line(name, **options, accelerator_count=accelerator_count)}")
    path = vertex.write_job_spec(spec, out, overwrite=overwrite, comment=comment)
    chief = spec["workerPoolSpecs"][0]
    return {"out": str(path), "recipe": name, "image": image, "replicas": replicas, "machine": machine,
            "accelerator": accelerator, "accelerator_count": chief["machineSpec"].get("acceleratorCount", 0),
            "nproc": processes if "--nproc" in arguments else None,
            "base_output_dir": base_output_dir, "spec": spec}


def _check_device(device: str, accelerator: Optional[str], processes: int) -> None:
    """``train.device`` must fit the job's machines, checked here rather than on Google's:
    a GPU needs ``--accelerator``, Vertex AI has no Apple GPU, and each of several processes
    a machine takes its own GPU (``cuda``, not ``cuda:N``)."""
    if device == "mps":
        raise cfg.ConfigError("train.device=mps: Vertex AI's machines have no Apple GPU (use auto, cpu or cuda)")
    if device.startswith("cuda") and accelerator is None:
        raise cfg.ConfigError(f"train.device={device}: the job's machines have no GPU; give --accelerator TYPE "
                              "(or leave train.device at auto)")
    if ":" in device and processes > 1:
        raise cfg.ConfigError(f"train.device={device}: each of the {processes} processes a machine takes its own GPU "
                              "(cuda:LOCAL_RANK); give train.device=cuda")


def _builtin_name(recipe: PathLike) -> str:
    """The built-in recipe ``recipe`` names: its name, or one of the built-in files."""
    path = Path(recipe)
    if path.is_file():
        try:
            if path.resolve() == builtin_recipe(path.stem).resolve():
                return path.stem
        except cfg.ConfigError:  # no built-in recipe of that name
            pass
        raise cfg.ConfigError(f"{recipe}: the job trains in the image, which holds the built-in recipes only: "
                              "put the file in recipes/, build and push the image again, and give its name")
    if path.suffix in (".yaml", ".yml", ".json"):
        raise cfg.ConfigError(f"{recipe}: no such file")
    builtin_recipe(str(recipe))  # an unknown name is one line listing the built-in ones
    return str(recipe)
