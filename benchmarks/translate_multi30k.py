"""The shipped Multi30k recipe, measured: BLEU, wall time, tokens/s, peak memory, beam speed.

What it does
    1. trains ``recipes/translate-multi30k.yaml`` as shipped (or reuses a finished run
       folder with ``--checkpoint``), timing the whole run's wall clock;
    2. reports the test_2016_flickr scores the run wrote (sacreBLEU 13a, cased and
       lower-cased, and chrF), training tokens/s and the process's peak resident memory;
    3. times beam search (beam 4, the recipe's length penalty) over the 1000 test
       sentences with the trained model, and checks its BLEU against the run's own figure.

Goals (the translation issue): lower-cased sacreBLEU >= 40 within 60 minutes of training
on a 2-core CPU; beam-4 decoding of the 1000 test sentences in under 60 s.

Run it from the repository root, with Multi30k where ``TAA_DATA`` points::

    TAA_DATA=../shared/data python benchmarks/translate_multi30k.py --out runs/bench-de-en
    TAA_DATA=../shared/data python benchmarks/translate_multi30k.py --checkpoint runs/de-en   # decode only
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from taa.config import RecipeConfig
from taa.tasks.translation import bleu_scores, load_pairs, load_translator, run, translate

ROOT = Path(__file__).resolve().parents[1]


def peak_memory_mb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "translate-multi30k.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="runs/bench-translate-multi30k", help="run folder for training")
    parser.add_argument("--checkpoint", default=None, help="skip training: measure this finished run folder")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    figures: dict[str, float | int | str] = {}
    if args.checkpoint is None:
        recipe = RecipeConfig.load(args.recipe, args.overrides)
        started = time.perf_counter()
        outcome = run(recipe, out=args.out, progress=not args.json)
        figures["run_wall_seconds"] = time.perf_counter() - started
        folder = Path(args.out)
        metrics = outcome["metrics"]
    else:
        folder = Path(args.checkpoint)
        metrics = json.loads((folder / "metrics.json").read_text())
    figures.update({
        "test_bleu": metrics["test_bleu"],
        "test_bleu_lowercase": metrics["test_bleu_lowercase"],
        "test_chrf": metrics["test_chrf"],
        "train_seconds": metrics["train_seconds"],
        "train_tokens_per_second": metrics["tokens_per_second"],
        "steps": metrics["steps"],
    })

    model, tokenizer, recipe = load_translator(folder)
    pairs = load_pairs(recipe.data, "test")
    started = time.perf_counter()
    hypotheses = translate(model, tokenizer, [s for s, _ in pairs], beam=args.beam,
                           length_penalty=recipe.data.length_penalty, max_extra=recipe.data.max_extra)
    figures["beam_decode_seconds"] = time.perf_counter() - started
    figures["beam"] = args.beam
    figures["test_sentences"] = len(pairs)
    figures["beam_bleu_lowercase"] = bleu_scores(hypotheses, [t for _, t in pairs])["bleu_lowercase"]
    figures["peak_memory_mb"] = peak_memory_mb()

    if args.json:
        print(json.dumps(figures))
        return
    print(f"test_2016_flickr: sacreBLEU {figures['test_bleu']:.2f} cased, "
          f"{figures['test_bleu_lowercase']:.2f} lower-cased (goal >= 40), chrF {figures['test_chrf']:.2f}")
    print(f"training: {figures['train_seconds'] / 60:.1f} min (goal <= 60), {figures['steps']} steps, "
          f"{figures['train_tokens_per_second']:,.0f} target tokens/s")
    if "run_wall_seconds" in figures:
        print(f"whole run (data, BPE, training, test decode): {figures['run_wall_seconds'] / 60:.1f} min")
    print(f"beam {args.beam} over {len(pairs)} test sentences: {figures['beam_decode_seconds']:.1f} s (goal < 60 s), "
          f"lower-cased BLEU {figures['beam_bleu_lowercase']:.2f}")
    print(f"peak memory of this process: {figures['peak_memory_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
