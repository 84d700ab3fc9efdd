"""A Decision Transformer against behaviour cloning, on the same offline data, over seeds.

What it does
    1. for each training seed, trains the recipe twice on the same generated data (its
       ``data.data_seed`` is fixed): the Decision Transformer as shipped, and behaviour
       cloning (``data.returns_to_go=false``: the same network, returns-to-go 0);
    2. reports each run's final weights playing ``data.eval_episodes`` episodes of the
       environment (episode i seeded ``data.eval_seed + i``) at the data's best return, and
       the training time, beside the data's own returns;
    3. plays the first seed's Decision Transformer at each of ``--targets`` and draws the
       achieved return against the target (``--plot``): returns steer it when the curve rises.

Goals (the Decision Transformer's): CartPole-v1, 1,000 mixed episodes of which at most a
third score 475 or more: a mean return >= 475 over 100 episodes with every seed, the final
weights, training <= 10 minutes on a 2-core CPU; the Decision Transformer above behaviour
cloning; a lower target, a lower return. Pendulum-v1: against behaviour cloning, reported.

Run it from the repository root::

    python benchmarks/decision_transformer.py --out runs/bench-dt-cartpole --plot docs/images/dt-cartpole-targets.png
    python benchmarks/decision_transformer.py --recipe recipes/dt-pendulum.yaml --seeds 0 \\
        --targets -800,-600,-400,-200,-100 --out runs/bench-dt-pendulum
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def train(recipe: str, overrides: list[str], out: Path, progress: bool) -> dict[str, Any]:
    from taa import api

    return api.train(recipe, overrides=overrides, out=str(out), tracking="none", progress=progress,
                     overwrite=True)["metrics"]


def row(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("eval_mean_return", "eval_std_return", "eval_min_return", "eval_solved_share", "train_seconds",
            "steps", "val_loss")
    return {key: metrics[key] for key in keys if key in metrics}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "dt-cartpole.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    parser.add_argument("--targets", default="50,100,200,300,400,500",
                        help="target returns for the curve, comma-separated ('' = no curve)")
    parser.add_argument("--curve-episodes", type=int, default=100, help="episodes per target of the curve")
    parser.add_argument("--out", default="runs/bench-decision-transformer", help="a folder for the run folders")
    parser.add_argument("--plot", default=None, help="PNG of achieved against target return")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    from taa import api

    out = Path(args.out)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    figures: dict[str, Any] = {"recipe": args.recipe, "seeds": seeds, "runs": {}}
    for seed in seeds:
        for name, extra in (("dt", []), ("bc", ["data.returns_to_go=false"])):
            metrics = train(args.recipe, [*args.overrides, f"train.seed={seed}", *extra], out / f"{name}-{seed}",
                            progress=not args.json)
            figures["runs"][f"{name}-{seed}"] = row(metrics)
            figures.setdefault("data", {key: metrics[key] for key in metrics if key.startswith("data_")})
    for name in ("dt", "bc"):
        means = [figures["runs"][f"{name}-{seed}"]["eval_mean_return"] for seed in seeds]
        figures[f"{name}_mean_return_over_seeds"] = statistics.fmean(means)
        figures[f"{name}_worst_seed_mean_return"] = min(means)
    if args.targets:
        targets = [float(target) for target in args.targets.split(",")]
        curve = api.evaluate(str(out / f"dt-{seeds[0]}"), env="", episodes=args.curve_episodes, seed=0,
                             target_returns=targets, plot=args.plot)
        figures["curve"] = [{key: result[key] for key in ("target_return", "mean_return", "std_return")}
                            for result in curve["results"]]
        if args.plot:
            figures["plot"] = args.plot
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"data: {json.dumps(figures['data'])}")
        print(f"{'run':>8} {'mean return':>12} {'std':>8} {'solved':>7} {'train s':>8} {'steps':>6}")
        for name, run in figures["runs"].items():
            print(f"{name:>8} {run['eval_mean_return']:12.2f} {run['eval_std_return']:8.2f} "
                  f"{100 * run.get('eval_solved_share', float('nan')):6.1f}% {run['train_seconds']:8.1f} "
                  f"{run['steps']:6d}")
        for name in ("dt", "bc"):
            print(f"{name}: mean over seeds {figures[f'{name}_mean_return_over_seeds']:.2f}, "
                  f"worst seed {figures[f'{name}_worst_seed_mean_return']:.2f}")
        for point in figures.get("curve", []):
            print(f"target {point['target_return']:8g} -> {point['mean_return']:8.2f} ± {point['std_return']:.2f}")
    return figures


if __name__ == "__main__":
    main()
