"""Greedy generation with the KV cache: taa's ``generate`` against transformers' ``GPT2LMHeadModel.generate``.

What it measures
    The wall time of generating ``--new-tokens`` (128) tokens greedily after a 16-token
    prompt, for batch 1 and batch 8, with two model shapes:

    * ``shakespeare``: nanoGPT's shakespeare_char model (6 layers, 6 heads, 384 wide,
      65-token vocabulary, 256 positions); per-step overhead dominates it;
    * ``gpt2-small``: GPT-2 small's shape (12 layers, 12 heads, 768 wide, 50257 tokens,
      1024 positions), random weights; reading the weights dominates it at batch 1.

    taa runs :func:`taa.torch.generate.generate`; transformers runs
    ``model.generate(do_sample=False, num_beams=1)`` with its default (dynamic) KV cache.
    Printed: ms per generation step (one token for every row of the batch), tokens/s,
    and the ratio taa speed / transformers speed = median transformers time / median taa
    time. Beside each taa row: the time of a step's matrix products alone (every linear
    map of the model applied once to the batch's rows, in the model's dtype, nothing
    else) and the ceiling it sets, transformers' step time / that time: an implementation
    that calls the same matrix kernels on the same weights cannot beat transformers by
    more. For gpt2-small at batch 1 the script also measures the memory bandwidth (a
    large tensor copy: bytes read + bytes written per second) and prints the floor
    parameter bytes / bandwidth: no implementation can produce a token faster than it
    can read every weight once.

Why the comparison is fair
    * same weights: transformers' randomly initialised model is converted to taa with
      ``taa.convert.hf_gpt2`` (in memory), and before any timing both generate from the
      benchmark prompts and must give identical tokens (float32);
    * same work: no end token (every row produces all the tokens), the same prompts, the
      same number of threads (``--threads``, default 2), both in inference mode;
    * the same noise: the runs are interleaved round by round (taa, transformers,
      transformers, taa, ...), after a warm-up run each; each figure is a median.

    bfloat16: taa's model is cast to bfloat16 once (what ``taa generate --dtype bfloat16``
    and ``from_pretrained(dir, dtype=...)`` do) and timed against transformers in
    float32; its tokens are compared with taa's float32 tokens (agreement is reported,
    and the first step's logits must have cosine >= 0.999 to the float32 ones).

Goals (float32 unless said): shakespeare taa >= 2.0x transformers; gpt2-small
>= 1.1x; gpt2-small in bfloat16 >= 2.0x transformers' float32.

Run it (from the repository root)::

    python benchmarks/generate_vs_transformers.py                 # everything, ~10-15 minutes idle
    python benchmarks/generate_vs_transformers.py --quick         # a smoke run: a few seconds
    python benchmarks/generate_vs_transformers.py --shapes shakespeare --batches 1 --rounds 9
    python benchmarks/generate_vs_transformers.py --json          # one JSON object at the end
"""

from __future__ import annotations

import argparse
import importlib.util
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

if importlib.util.find_spec("taa") is None:  # running from a checkout without an install: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from taa.convert import hf_gpt2
from taa.torch.convert.state_dict import load_checked
from taa.torch.generate import generate
from taa.torch.models.gpt import GPT

SHAPES = {
    "shakespeare": dict(n_layer=6, n_head=6, n_embd=384, vocab_size=65, n_positions=256),
    "gpt2-small": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024),
}
GOALS = {("shakespeare", "float32"): 2.0, ("gpt2-small", "float32"): 1.1, ("gpt2-small", "bfloat16"): 2.0}


def build_pair(shape: dict, seed: int):
    """A randomly initialised transformers GPT-2 and the same weights in taa, both in eval mode."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.GPT2Config(**shape, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    theirs = transformers.GPT2LMHeadModel(config).eval()
    theirs.generation_config.eos_token_id = None  # no end token: every row makes every token
    theirs.generation_config.bos_token_id = None
    theirs.generation_config.pad_token_id = 0
    our_config = hf_gpt2.config_from_hf(config.to_dict())
    ours = GPT(our_config)
    load_checked(ours, hf_gpt2.state_dict_from_hf(theirs.state_dict(), our_config), "converted GPT-2")
    return theirs, ours.eval()


def copy_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes read + written per second by a large tensor copy (the best of a few)."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    target.copy_(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * source.element_size() / best


def unique_parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())  # parameters() skips tied copies


def matrix_products_seconds(model: torch.nn.Module, rows: int, repeats: int = 5) -> float:
    """The time of one generation step's matrix products alone: every ``nn.Linear`` of the
    model applied, in order, to ``rows`` input rows of its dtype (the median of a few
    passes, after one warm-up pass). No implementation that calls the same kernels can
    make a step faster than this."""
    weights = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            weights.append((module.weight, module.bias))
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=w.dtype) for w, _ in weights}
    passes = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            for weight, bias in weights:
                torch.nn.functional.linear(inputs[weight.shape[1]], weight, bias)
            passes.append(time.perf_counter() - start)
    return statistics.median(passes[1:])


def first_difference(a: torch.Tensor, b: torch.Tensor) -> str:
    rows, steps = (a != b).nonzero(as_tuple=True)
    return f"row {int(rows[0])}, position {int(steps[0])}" if len(rows) else "none"


def timed(function, clock) -> float:
    start = clock()
    function()
    return clock() - start


def run_case(shape_name: str, batch: int, args, theirs, ours, ours_bf16, bandwidth) -> list[dict]:
    generator = torch.Generator().manual_seed(batch)
    vocab = SHAPES[shape_name]["vocab_size"]
    prompt = torch.randint(1, vocab, (batch, args.prompt_length), generator=generator)  # 0 is the pad id
    mask = torch.ones_like(prompt)
    new = args.new_tokens

    def run_theirs():
        with torch.inference_mode():
            return theirs.generate(prompt, attention_mask=mask, max_new_tokens=new, do_sample=False, num_beams=1)

    def run_ours(model):
        return generate(model, prompt, max_new_tokens=new, eos_id=-1)  # -1: no end token

    expected, tokens = run_theirs(), run_ours(ours)  # also the warm-up runs
    if not torch.equal(expected, tokens):
        raise SystemExit(f"{shape_name} batch {batch}: taa's tokens differ from transformers' "
                         f"(first at {first_difference(expected, tokens)}): not timing different work")
    sides = {"taa float32": lambda: run_ours(ours), "transformers float32": run_theirs}
    agreement = None
    if ours_bf16 is not None:
        bf16_tokens = run_ours(ours_bf16)
        generated = slice(args.prompt_length, None)
        agreement = float((bf16_tokens[:, generated] == tokens[:, generated]).float().mean())
        with torch.inference_mode():
            cosine = torch.nn.functional.cosine_similarity(
                ours_bf16(prompt)[:, -1].float(), ours(prompt)[:, -1], dim=-1
            ).min()
        if float(cosine) < 0.999:
            raise SystemExit(f"{shape_name} batch {batch}: bfloat16 logits have cosine {float(cosine):.5f} < 0.999")
        sides["taa bfloat16"] = lambda: run_ours(ours_bf16)

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for round_index in range(args.rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(timed(sides[name], clock))

    reference = statistics.median(times["transformers float32"])
    results = []
    for name in names:
        median = statistics.median(times[name])
        dtype = name.split()[-1]
        row = {
            "shape": shape_name, "batch": batch, "side": name, "new_tokens": new,
            "ms_per_step": 1000 * median / new, "tokens_per_second": batch * new / median,
            "times_s": times[name],
        }
        if name.startswith("taa"):
            row["speedup_vs_transformers_float32"] = reference / median
            row["goal"] = GOALS.get((shape_name, dtype))
            products = matrix_products_seconds(ours if dtype == "float32" else ours_bf16, batch)
            row["matrix_products_ms"] = 1000 * products
            row["speedup_ceiling"] = (reference / new) / products  # a step of nothing but the products
        if name == "taa bfloat16":
            row["token_agreement_with_float32"] = agreement
        if bandwidth is not None and batch == 1 and name.startswith("taa"):
            model = ours if dtype == "float32" else ours_bf16
            floor = unique_parameter_bytes(model) / bandwidth
            row["bandwidth_floor_ms"] = 1000 * floor
            row["ms_over_floor"] = (1000 * median / new) / (1000 * floor)
        results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per side (interleaved)")
    parser.add_argument("--no-bfloat16", action="store_true", help="skip the bfloat16 runs of gpt2-small")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 8 new tokens, 1 round, gpt2-small cut to 2 layers")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    if args.quick:
        args.new_tokens, args.rounds = 8, 1
    torch.set_num_threads(args.threads)

    bandwidth = None
    results = []
    for shape_name in args.shapes:
        shape = dict(SHAPES[shape_name])
        if args.quick and shape_name == "gpt2-small":
            shape["n_layer"] = 2
        theirs, ours = build_pair(shape, args.seed)
        ours_bf16 = None
        if shape_name == "gpt2-small":
            if bandwidth is None:
                bandwidth = copy_bandwidth(128 if args.quick else 512)
            if not args.no_bfloat16:
                ours_bf16 = copy.deepcopy(ours).to(torch.bfloat16)  # cast once, as from_pretrained(dtype=...) does
        for batch in args.batches:
            rows = run_case(shape_name, batch, args, theirs, ours, ours_bf16,
                            bandwidth if shape_name == "gpt2-small" else None)
            results.extend(rows)
            if not args.json:
                for row in rows:
                    line = (f"{shape_name:>11} b={batch} {row['side']:<21} {row['ms_per_step']:8.2f} ms/step "
                            f"{row['tokens_per_second']:9.1f} tok/s")
                    if "speedup_vs_transformers_float32" in row:
                        goal = row["goal"]
                        line += f"   x{row['speedup_vs_transformers_float32']:.2f} vs transformers float32"
                        line += f" (goal >= {goal})" if goal else ""
                    if "matrix_products_ms" in row:
                        line += (f"   products alone {row['matrix_products_ms']:.2f} ms "
                                 f"(ceiling x{row['speedup_ceiling']:.2f})")
                    if "bandwidth_floor_ms" in row:
                        line += f"   floor {row['bandwidth_floor_ms']:.2f} ms ({row['ms_over_floor']:.2f}x of it)"
                    if row.get("token_agreement_with_float32") is not None:
                        line += f"   tokens = float32's: {row['token_agreement_with_float32']:.0%}"
                    print(line, flush=True)
        del theirs, ours, ours_bf16

    summary = {
        "benchmark": "generate_vs_transformers", "threads": args.threads, "quick": args.quick,
        "bandwidth_GBps": bandwidth / 1e9 if bandwidth else None,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "results": results,
    }
    if args.json:
        print(json.dumps(summary))
    elif bandwidth:
        print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write), {args.threads} threads")


if __name__ == "__main__":
    main()
