"""Training on the CPU against a GPU (``train.device``): step time, tokens/s, speed-up, losses.

What it measures
    For each recipe, the same command twice, one after the other, each as its own
    subprocess::

        python -m taa train RECIPE --out TMP --tracking none --no-progress --json --set ...

    first with ``--set train.device=cpu``, then with ``--set train.device=DEVICE``
    (``--device``: cuda by default; cuda:N and mps too). Printed for each run:

    * wall time: the whole command, start-up, data preparation and the final evaluation
      (test BLEU, samples) included;
    * the step time: ``train_seconds / steps``, from the run's own JSON (``metrics``).
      ``train_seconds`` is the training loop alone, its validations included (the char
      GPT's final one covers the whole validation split), so with few steps the first
      steps' one-off costs (on a GPU: CUDA's start, the kernels' first calls) weigh in;
    * ``tokens_per_second``, the run's own figure;
    * the speed-up DEVICE / CPU of tokens/s (above 1: the device trains faster);
    * the two final training losses side by side (the mean of the last logging interval)
      and their relative difference. The same seed, batches and steps on both, but the
      kernels round differently (another summation order, TF32 or bfloat16 on a GPU), so
      the losses drift apart a little; that is reported, not checked. Dropout
      (translate-multi30k-small: 0.1) draws its masks from each device's own generator, so
      there they differ more; ``--set model.dropout=0`` takes that away.

    With ``--device cpu`` both runs are on the CPU: a check of the script itself (the tests
    run it so), not of any speed.

Threads
    Both runs get ``train.threads`` (passed with ``--set``, and as ``OMP_NUM_THREADS``):
    every core this process may use, or ``--cpu-threads T``. On the GPU run they serve
    the host side (data, the Python loop). A recipe's own ``train.threads`` is overridden.

The recipes and their steps
    By default: ``recipes/copy.yaml`` (1000 steps), ``recipes/translate-multi30k-small.yaml``
    (150 steps; Multi30k where ``TAA_DATA`` points) and ``recipes/gpt-shakespeare-char.yaml``
    (500 steps; Tiny Shakespeare there too): about a minute of training each on the CPU of
    a 2-core machine. What a step costs there, from the recipes' notes and docs/results.md:
    copy, 64 sequences of 10 tokens through a 64-wide 2+2-layer model, about 0.05 s
    (500 steps in about half a minute); translation, batches of 4,096 tokens through a
    128-wide 2+2-layer model in float32, about 0.4 s (300 steps in a few minutes); the
    char GPT, 16 x 128 characters through a 128-wide 4-layer model in bfloat16 with Muon,
    about 0.1 s (5,640 steps in its 10 minutes), its final validation over the whole
    validation split besides. ``--steps`` sets the steps of every recipe.
    ``train.max_minutes`` is set to 0 so that the steps, not a clock, end a run and set its
    learning-rate schedule (a time budget would make the two runs train differently).
    ``--set KEY=VALUE`` goes to both runs of every recipe, after the script's own settings.

When the device is not there (no CUDA GPU, or a cuda:N beyond the last), the script stops
before any run with taa's own one-line message (``train.device=cuda: no CUDA GPU here
...``) and exit status 1. Other work on the machine skews the CPU side: run it on an idle
machine. The subprocesses inherit the environment (``TAA_DATA`` included).

Run it (from the repository root)::

    TAA_DATA=../shared/data python benchmarks/device_train.py
    python benchmarks/device_train.py --recipes copy --steps 20              # a short run
    python benchmarks/device_train.py --device cpu --recipes copy --steps 2  # CPU against CPU
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Optional

import torch

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (the tests): find the sibling
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from distributed_cpu import (  # noqa: E402  (the machine, the runs and the figures, shared)
    ROOT,
    _number,
    add_run_options,
    check_counts,
    compare_recipes,
    machine,
    recipe_label,
    recipe_path,
    relative_difference,
    run_once,
    usable_cores,
)

# The default recipes and their steps: about a minute of training each on a 2-core CPU.
DEFAULT_RECIPES: tuple[tuple[str, int], ...] = (
    ("copy", 1000),
    ("translate-multi30k-small", 150),
    ("gpt-shakespeare-char", 500),
)
DEFAULT_STEPS = dict(DEFAULT_RECIPES)


# ------------------------------------------------------------------------------ the device

def device_problem(name: str) -> Optional[str]:
    """taa's own one-line message when ``train.device=NAME`` cannot run here, else None."""
    if importlib.util.find_spec("taa") is None:  # a checkout without an install: use ./src
        sys.path.insert(0, str(ROOT / "src"))
    from taa.config import ConfigError
    from taa.torch.devices import resolve_device

    try:
        resolve_device(name, "train.device")
    except ConfigError as error:
        return str(error)
    return None


def gpu_name(name: str) -> Optional[str]:
    """The name of the CUDA GPU that ``name`` picks (cuda:0 for any other), None without one."""
    if not torch.cuda.is_available():
        return None
    index = int(name.partition(":")[2]) if name.startswith("cuda:") else 0
    return torch.cuda.get_device_name(index)


# ------------------------------------------------------------------------------ the runs

def train_on(device: str, recipe: str, out: Path, threads: int, steps: Optional[int],
             overrides: list[str]) -> dict[str, Any]:
    """One ``taa train`` subprocess on ``device``: its figures, the step time added."""
    figures = run_once(recipe, out, 1, threads, steps, [f"train.device={device}", *overrides])
    figures.pop("nproc", None)
    figures["device"] = device
    if figures.get("train_seconds") is not None and figures.get("steps"):
        figures["step_seconds"] = figures["train_seconds"] / figures["steps"]
    return figures


def compare(recipe: str, folder: Path, args: argparse.Namespace, threads: int, log) -> dict[str, Any]:
    """Both runs of one recipe, CPU first, and their ratios."""
    label = recipe_label(recipe)
    steps = args.steps if args.steps is not None else DEFAULT_STEPS.get(label)
    path = recipe_path(recipe)
    runs = {}
    for side, device in (("cpu", "cpu"), ("device", args.device)):
        log(f"{label}: training on {device} ({threads} thread{'s' if threads > 1 else ''}) ...")
        runs[side] = train_on(device, path, folder / f"{label}-{side}", threads, steps, args.overrides)
        if "error" in runs[side]:
            log(f"{label}: {device} failed: {runs[side]['error']}")
    cpu, other = runs["cpu"], runs["device"]
    speedup = None
    if cpu.get("tokens_per_second") and other.get("tokens_per_second"):
        speedup = other["tokens_per_second"] / cpu["tokens_per_second"]
    if speedup is not None and cpu.get("step_seconds") and other.get("step_seconds"):
        log(f"{label}: {1000 * cpu['step_seconds']:.2f} ms a step on cpu, {1000 * other['step_seconds']:.2f} on "
            f"{args.device}: {speedup:.2f}x")  # a record in the log should a time limit cut the run short
    return {
        "recipe": label, "path": path, "steps": steps, "cpu": cpu, "device": other,
        "speedup": speedup,
        "loss_relative_difference": relative_difference(cpu.get("final_train_loss"),
                                                        other.get("final_train_loss")),
    }


# ------------------------------------------------------------------------------ the report

def report(summary: dict[str, Any]) -> str:
    m, device, threads = summary["machine"], summary["device"], summary["threads"]
    how = "--cpu-threads" if summary["threads_given"] else f"default: all {m['cores']} cores"
    lines = [
        f"taa training on the CPU against {device} (train.device; the same run on each)",
        f"machine         {m['cpu']}; {m['cores']} cores; torch {m['torch']}, Python {m['python']}",
        f"gpu             {m['gpu'] or 'none'}",
        f"threads         {threads} for each run ({how})",
    ]
    for result in summary["results"]:
        cpu, other = result["cpu"], result["device"]
        steps = "the recipe's steps" if result["steps"] is None else f"{result['steps']} steps"
        lines += ["", f"{result['recipe']} ({result['path']}), {steps}",
                  f"{'':22}{'cpu':>14}{device:>16}{f'{device}/cpu':>14}"]
        for run_ in (cpu, other):
            if "error" in run_:
                lines.append(f"failed on {run_['device']}: {run_['error']}")
        step_ms = [None if r.get("step_seconds") is None else 1000 * r["step_seconds"] for r in (cpu, other)]
        rows = [
            ("wall time (s)", _number(cpu.get("wall_seconds"), 1), _number(other.get("wall_seconds"), 1), ""),
            ("step time (ms)", _number(step_ms[0], 2), _number(step_ms[1], 2), ""),
            ("tokens/s", _number(cpu.get("tokens_per_second"), 0, True),
             _number(other.get("tokens_per_second"), 0, True),
             "n/a" if result["speedup"] is None else f"{result['speedup']:.2f}x"),
            ("final train loss", _number(cpu.get("final_train_loss"), 7),
             _number(other.get("final_train_loss"), 7), ""),
        ]
        lines += [f"{name:22}{a:>14}{b:>16}{c:>14}" for name, a, b, c in rows]
        difference = result["loss_relative_difference"]
        lines.append(f"{'loss rel. diff.':22}"
                     + ("n/a" if difference is None else f"{difference:.1e} (kernels round differently; not checked)"))
    if summary.get("kept"):
        lines += ["", f"run folders kept in {summary['kept']}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the command

def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_options(parser, DEFAULT_RECIPES)
    parser.add_argument("--device", default="cuda",
                        help="the device the CPU is set against: cuda, cuda:N, mps, cpu (default: %(default)s)")
    parser.add_argument("--cpu-threads", type=int, default=None,
                        help="train.threads of both runs (default: every core this process may use)")
    args = parser.parse_args(argv)
    check_counts(parser, args, "steps", "cpu_threads")
    return args


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    problem = device_problem(args.device)
    if problem is not None:
        raise SystemExit(problem)  # one line on stderr, exit status 1
    threads = args.cpu_threads if args.cpu_threads is not None else usable_cores()
    results, kept = compare_recipes(args, compare, threads, "taa-device-train-")
    summary = {
        "benchmark": "device_train", "machine": {**machine(), "gpu": gpu_name(args.device)},
        "device": args.device, "threads": threads, "threads_given": args.cpu_threads is not None,
        "overrides": args.overrides, "results": results, "kept": kept,
    }
    print(json.dumps(summary) if args.json else report(summary), flush=True)
    if any("error" in r["cpu"] or "error" in r["device"] for r in results):
        raise SystemExit(1)
    return summary


if __name__ == "__main__":
    main()
