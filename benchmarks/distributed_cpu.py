"""Training on one CPU process against N processes (``taa train --nproc N``): wall time, tokens/s, losses.

What it measures
    For each recipe, the same command twice, one after the other, each as its own
    subprocess::

        python -m taa train RECIPE --out TMP --tracking none --no-progress --json --set ...

    first on 1 process, then with ``--nproc N`` (torchrun's launcher; gloo on CPUs).
    ``train.batch_size`` (a translation recipe's ``data.max_tokens`` batches alike) is the
    whole batch, split between the processes, so both runs do the same work and should end
    at the same weights. Printed for each run:

    * wall time: the whole command, start-up, data preparation, the final evaluation
      (test BLEU, samples) and, for N processes, torchrun's start and rendezvous included;
    * ``train_seconds`` and ``tokens_per_second``, the run's own figures from its JSON
      (``metrics``): the training loop alone, its validations included, tokens counted over
      the whole batch;
    * the ratio N processes / 1 process of tokens/s (above 1: the N processes train faster);
    * the two final training losses side by side (the mean of the last logging interval)
      and their relative difference: the same batches split differently, so without dropout
      only float rounding tells them apart (copy and the char GPT, 3 steps: below 1e-5). With dropout
      (translate-multi30k-small, translate-tiny: 0.1) each process draws its own masks, so
      the losses differ by the masks' noise (translate-tiny, 3 steps: 4e-3);
      ``--set model.dropout=0`` makes them agree again.

Threads
    Each process's kernels get ``train.threads`` (passed with ``--set``, and as
    ``OMP_NUM_THREADS``). By default the 1-process run gets every core and each of the N
    processes an equal part (cores / N, at least 1): on 2 cores and ``--nproc 2`` each
    process gets one thread. ``--threads T`` gives every process of both runs T threads.
    A recipe's own ``train.threads`` (translate-tiny sets 1) is overridden either way.

The recipes and their steps
    By default: ``recipes/copy.yaml`` (200 steps), ``recipes/translate-multi30k-small.yaml``
    (100 steps; Multi30k where ``TAA_DATA`` points) and ``recipes/gpt-shakespeare-char.yaml``
    (200 steps; Tiny Shakespeare there too). ``--steps`` sets the steps of every recipe.
    With few steps the first steps' one-off costs dominate ``train_seconds``; validations
    count in it too (the char GPT's final one covers the whole validation split).
    ``train.max_minutes`` is set to 0 so that the steps, not a clock, end a run and set its
    learning-rate schedule (a time budget would make the two runs train differently).
    ``--set KEY=VALUE`` goes to both runs of every recipe, after the script's own settings.

Other work on the machine matters a lot on a small CPU box: run it on an idle machine.
The subprocesses inherit the environment (``TAA_DATA`` included).

Run it (from the repository root)::

    TAA_DATA=../shared/data python benchmarks/distributed_cpu.py
    python benchmarks/distributed_cpu.py --recipes copy --steps 3            # a smoke run
    python benchmarks/distributed_cpu.py --recipes recipes/translate-tiny.yaml --steps 60 --threads 1 --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]

# The default recipes and their steps: enough that start-up is not the whole run.
DEFAULT_RECIPES: tuple[tuple[str, int], ...] = (
    ("copy", 200),
    ("translate-multi30k-small", 100),
    ("gpt-shakespeare-char", 200),
)
DEFAULT_STEPS = dict(DEFAULT_RECIPES)

LOSS_TOLERANCE = 1e-5  # relative: the two runs' final losses "agree" within it


# ------------------------------------------------------------------------------ the machine

def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo ("model name"), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """The cores this process may run on (its affinity), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": usable_cores(), "machine_cores": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version()}


# ------------------------------------------------------------------------------ the runs

def recipe_path(name: str) -> str:
    """A recipe file as given, else ``recipes/NAME.yaml`` of this checkout, else the name
    itself (``taa train`` knows its built-in recipes by name)."""
    path = Path(name)
    if path.is_file():
        return str(path.resolve())
    for candidate in (ROOT / "recipes" / name, ROOT / "recipes" / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    return name


def recipe_label(name: str) -> str:
    stem = Path(name).name
    return stem[:-5] if stem.endswith(".yaml") else stem


def thread_plan(args: argparse.Namespace) -> dict[int, int]:
    """Threads per process for the 1-process and the N-process run."""
    if args.threads is not None:
        return {1: args.threads, args.nproc: args.threads}
    cores = usable_cores()
    return {1: cores, args.nproc: max(1, cores // args.nproc)}


def child_environment() -> dict[str, str]:
    """This process's environment (``TAA_DATA`` included), with ./src importable when taa
    is not installed."""
    env = dict(os.environ)
    spec = importlib.util.find_spec("taa")
    if spec is None or spec.origin is None or not Path(spec.origin).resolve().is_relative_to(ROOT):
        src = str(ROOT / "src")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def command_for(recipe: str, out: Path, nproc: int, threads: int, steps: Optional[int],
                overrides: list[str]) -> list[str]:
    settings = [f"train.threads={threads}", "train.max_minutes=0"]
    if steps is not None:
        settings.append(f"train.steps={steps}")
    settings += overrides
    return [sys.executable, "-m", "taa", "train", recipe, "--out", str(out), "--tracking", "none",
            "--no-progress", "--json", *(["--nproc", str(nproc)] if nproc > 1 else []),
            *(item for setting in settings for item in ("--set", setting))]


def last_json_object(text: str) -> dict[str, Any]:
    """The last line of ``text`` that is a JSON object (the run's result)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON object in the command's output")


def run_once(recipe: str, out: Path, nproc: int, threads: int, steps: Optional[int],
             overrides: list[str]) -> dict[str, Any]:
    """One ``taa train`` subprocess: its wall time and the figures its JSON reports."""
    command = command_for(recipe, out, nproc, threads, steps, overrides)
    env = child_environment()
    env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    figures: dict[str, Any] = {"nproc": nproc, "threads": threads, "wall_seconds": wall,
                               "command": " ".join(command[1:])}
    if finished.returncode != 0:
        tail = (finished.stderr or finished.stdout).strip().splitlines()[-8:]
        figures["error"] = f"exit status {finished.returncode}: " + " | ".join(tail)
        return figures
    try:
        metrics = last_json_object(finished.stdout)["metrics"]
    except (ValueError, KeyError) as error:
        figures["error"] = f"{error}: {finished.stdout.strip()[-400:]}"
        return figures
    figures.update({
        "steps": metrics.get("steps"),
        "train_seconds": metrics.get("train_seconds"),
        "tokens_per_second": metrics.get("tokens_per_second"),
        "final_train_loss": metrics.get("final_train_loss"),
    })
    return figures


def relative_difference(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale else 0.0


def compare(recipe: str, folder: Path, args: argparse.Namespace, threads: dict[int, int], log) -> dict[str, Any]:
    """Both runs of one recipe, one after the other, and their ratios."""
    label = recipe_label(recipe)
    steps = args.steps if args.steps is not None else DEFAULT_STEPS.get(label)
    path = recipe_path(recipe)
    runs = {}
    for nproc in (1, args.nproc):
        log(f"{label}: training on {nproc} process{'es' if nproc > 1 else ''} "
            f"x {threads[nproc]} thread{'s' if threads[nproc] > 1 else ''} ...")
        runs[nproc] = run_once(path, folder / f"{label}-{nproc}proc", nproc, threads[nproc], steps, args.overrides)
        if "error" in runs[nproc]:
            log(f"{label}: {nproc} process(es) failed: {runs[nproc]['error']}")
    one, many = runs[1], runs[args.nproc]
    ratio = None
    if one.get("tokens_per_second") and many.get("tokens_per_second"):
        ratio = many["tokens_per_second"] / one["tokens_per_second"]
    difference = relative_difference(one.get("final_train_loss"), many.get("final_train_loss"))
    return {
        "recipe": label, "path": path, "steps": steps,
        "one_process": one, "n_processes": many,
        "tokens_per_second_ratio": ratio,
        "wall_seconds_ratio": (many["wall_seconds"] / one["wall_seconds"]) if one["wall_seconds"] else None,
        "loss_relative_difference": difference,
        "losses_agree": None if difference is None else difference <= LOSS_TOLERANCE,
    }


# ------------------------------------------------------------------------------ the report

def _number(value: Optional[float], digits: int = 2, comma: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}" if comma else f"{value:.{digits}f}"


def report(summary: dict[str, Any]) -> str:
    m, n = summary["machine"], summary["nproc"]
    threads = summary["threads"]
    how = ("--threads" if summary["threads_given"]
           else f"default: all {m['cores']} cores for 1 process, cores / {n} for each of {n}")
    lines = [
        f"taa training on 1 CPU process against {n} (taa train --nproc {n}; gloo)",
        f"machine         {m['cpu']}; {m['cores']} cores; torch {m['torch']}, Python {m['python']}",
        f"threads         1 process x {threads['1']}, {n} processes x {threads[str(n)]} each ({how})",
    ]
    if n * threads[str(n)] > m["cores"]:
        lines.append(f"note            {n} x {threads[str(n)]} threads on {m['cores']} cores: "
                     f"the processes share cores")
    for result in summary["results"]:
        one, many = result["one_process"], result["n_processes"]
        steps = "the recipe's steps" if result["steps"] is None else f"{result['steps']} steps"
        lines += ["", f"{result['recipe']} ({result['path']}), {steps}",
                  f"{'':22}{'1 process':>14}{f'{n} processes':>16}{f'{n}/1':>10}"]
        for run_ in (one, many):
            if "error" in run_:
                lines.append(f"failed on {run_['nproc']}: {run_['error']}")
        wall_ratio = result["wall_seconds_ratio"]
        rows = [
            ("wall time (s)", _number(one.get("wall_seconds"), 1), _number(many.get("wall_seconds"), 1),
             _number(wall_ratio, 2)),
            ("train_seconds", _number(one.get("train_seconds"), 2), _number(many.get("train_seconds"), 2),
             _number(_ratio(many.get("train_seconds"), one.get("train_seconds")), 2)),
            ("tokens/s", _number(one.get("tokens_per_second"), 0, True),
             _number(many.get("tokens_per_second"), 0, True),
             "n/a" if result["tokens_per_second_ratio"] is None else f"{result['tokens_per_second_ratio']:.2f}x"),
            ("final train loss", _number(one.get("final_train_loss"), 7), _number(many.get("final_train_loss"), 7),
             ""),
        ]
        lines += [f"{name:22}{a:>14}{b:>16}{c:>10}" for name, a, b, c in rows]
        difference = result["loss_relative_difference"]
        verdict = ("n/a" if difference is None else
                   f"{difference:.1e} ({'agree' if result['losses_agree'] else 'differ'}: tolerance "
                   f"{LOSS_TOLERANCE:g}{'' if result['losses_agree'] else '; dropout draws other masks'})")
        lines.append(f"{'loss rel. diff.':22}{verdict}")
    if summary.get("kept"):
        lines += ["", f"run folders kept in {summary['kept']}"]
    return "\n".join(lines)


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


# ------------------------------------------------------------------------------ the command

def add_run_options(parser: argparse.ArgumentParser, recipes: tuple[tuple[str, int], ...]) -> None:
    """The options every recipe-running benchmark takes: --recipes, --steps, --set, --json, --keep."""
    steps = ", ".join(f"{name} {count}" for name, count in recipes)
    parser.add_argument("--recipes", nargs="+", default=[name for name, _ in recipes],
                        help="recipe files or names (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"training steps of every recipe (default: {steps}, another recipe its own)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe setting for every run (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (their location is printed)")


def check_counts(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """Each of the options ``names`` (as attributes: ``cpu_threads``), when given, is at least 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")


def compare_recipes(args: argparse.Namespace, compare: Any, threads: Any, prefix: str) -> tuple[list, Optional[str]]:
    """``compare(recipe, folder, args, threads, log)`` for each recipe, in a temporary folder
    removed afterwards unless ``--keep``: the results and the kept folder."""
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        results = [compare(recipe, folder, args, threads, log) for recipe in args.recipes]
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return results, str(folder) if args.keep else None


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_options(parser, DEFAULT_RECIPES)
    parser.add_argument("--nproc", type=int, default=2, help="processes of the second run (default: 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per process, both runs (default: all cores for 1 process, cores / nproc each "
                             "for nproc)")
    args = parser.parse_args(argv)
    if args.nproc < 2:
        parser.error("--nproc must be at least 2 (the first run is the 1-process one)")
    check_counts(parser, args, "steps", "threads")
    return args


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    threads = thread_plan(args)
    results, kept = compare_recipes(args, compare, threads, "taa-distributed-cpu-")
    summary = {
        "benchmark": "distributed_cpu", "machine": machine(), "nproc": args.nproc,
        "threads": {str(k): v for k, v in threads.items()}, "threads_given": args.threads is not None,
        "overrides": args.overrides, "loss_tolerance": LOSS_TOLERANCE, "results": results,
        "kept": kept,
    }
    print(json.dumps(summary) if args.json else report(summary), flush=True)
    if any("error" in r["one_process"] or "error" in r["n_processes"] for r in results):
        raise SystemExit(1)
    return summary


if __name__ == "__main__":
    main()
