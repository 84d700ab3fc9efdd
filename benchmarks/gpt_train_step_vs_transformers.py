"""A GPT training step: taa's GPT against transformers' ``GPT2LMHeadModel``, same weights, same dtype.

What it measures
    The wall time of one training step -- forward, next-token cross-entropy, backward,
    gradient clipping and an AdamW update -- at nanoGPT's CPU recipe for Tiny
    Shakespeare: 4 layers, 4 heads, 128 wide, context 64, batch 12, 65-token
    vocabulary, no dropout.

    * taa: ``GPT`` and the language-model task's loss
      (``taa.tasks.language_model.language_model_loss``: the summed loss, divided by the
      token count here);
    * transformers: ``GPT2LMHeadModel(input_ids=x, labels=y, shift_labels=y).loss`` (its own
      loss function, told that the labels are already shifted).

    Both use the same optimizer, built by taa's ``make_optimizer`` (AdamW, decay on the
    matrices only, nanoGPT's betas 0.9/0.99) and ``clip_grad_norm_(1.0)``. Printed: the
    median ms per step of each and the ratio taa speed / transformers speed.

Why the comparison is fair
    * same weights: transformers' randomly initialised model is converted to taa with
      ``taa.convert.hf_gpt2``; before any timing, both compute the loss of the same batch
      (equal within 1e-5 in float32, 1e-2 in bfloat16) and then train three steps on the same
      batches, after which their losses must still agree;
    * same batches (random windows of random tokens), same threads (``--threads``,
      default 2), same dtype (``--dtype bfloat16``: both under CPU bf16 autocast);
    * steps are interleaved one by one (taa, transformers, transformers, taa, ...) after
      warm-up steps; figures are medians.

Goal: taa >= 1.3x transformers in the same dtype.

Run it (from the repository root)::

    python benchmarks/gpt_train_step_vs_transformers.py                    # float32, ~1 minute idle
    python benchmarks/gpt_train_step_vs_transformers.py --dtype bfloat16
    python benchmarks/gpt_train_step_vs_transformers.py --quick            # a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

if importlib.util.find_spec("taa") is None:  # running from a checkout without an install: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from taa.config import TrainConfig
from taa.convert import hf_gpt2
from taa.tasks.language_model import LanguageModelBatch, language_model_loss
from taa.torch.convert.state_dict import load_checked
from taa.torch.models.gpt import GPT
from taa.torch.training.loop import make_optimizer

GOAL = 1.3


def build_pair(args):
    import transformers

    torch.manual_seed(args.seed)
    config = transformers.GPT2Config(
        vocab_size=args.vocab, n_positions=args.context, n_embd=args.width, n_layer=args.layers, n_head=args.heads,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )
    theirs = transformers.GPT2LMHeadModel(config).train()
    our_config = hf_gpt2.config_from_hf(config.to_dict())
    ours = GPT(our_config)
    load_checked(ours, hf_gpt2.state_dict_from_hf(theirs.state_dict(), our_config), "converted GPT-2")
    return theirs, ours.train()


def batches(args, count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    windows = [torch.randint(0, args.vocab, (args.batch, args.context + 1), generator=generator) for _ in range(count)]
    return [(w[:, :-1].contiguous(), w[:, 1:].contiguous()) for w in windows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per side (interleaved)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 timed steps, 1 warm-up")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup = 3, 1
    torch.set_num_threads(args.threads)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    train = TrainConfig(lr=1e-3, adam_beta1=0.9, adam_beta2=0.99, adam_eps=1e-8, weight_decay=0.1,
                        schedule="constant", warmup_steps=0)

    theirs, ours = build_pair(args)
    our_loss = language_model_loss()

    def loss_of(side: str, model, inputs, targets) -> torch.Tensor:
        with autocast:
            if side == "taa":
                total, count = our_loss(model, LanguageModelBatch(inputs, targets))
                return total / count
            return model(input_ids=inputs, labels=targets, shift_labels=targets).loss

    def make_step(side: str, model):
        optimizer = make_optimizer(model, train)

        def step(inputs, targets) -> float:
            loss = loss_of(side, model, inputs, targets)
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return float(loss.detach())

        return step

    steps = {"taa": make_step("taa", ours), "transformers": make_step("transformers", theirs)}
    tolerance = 1e-5 if args.dtype == "float32" else 1e-2
    check = batches(args, 4, seed=args.seed + 1)
    with torch.no_grad():
        first = {side: float(loss_of(side, m, *check[0])) for side, m in (("taa", ours), ("transformers", theirs))}
    if abs(first["taa"] - first["transformers"]) > tolerance:
        raise SystemExit(f"losses differ before training: {first}")
    for inputs, targets in check[:3]:
        losses = {side: step(inputs, targets) for side, step in steps.items()}
    with torch.no_grad():
        after = {side: float(loss_of(side, m, *check[3])) for side, m in (("taa", ours), ("transformers", theirs))}
    if abs(after["taa"] - after["transformers"]) > 10 * tolerance:
        raise SystemExit(f"losses differ after 3 identical steps: {after} (last step {losses})")

    work = batches(args, args.warmup + args.steps, seed=args.seed + 2)
    times: dict[str, list[float]] = {"taa": [], "transformers": []}
    names = list(steps)
    for index, (inputs, targets) in enumerate(work):
        for side in names if index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            steps[side](inputs, targets)
            if index >= args.warmup:
                times[side].append(time.perf_counter() - start)

    medians = {side: statistics.median(values) for side, values in times.items()}
    speedup = medians["transformers"] / medians["taa"]
    summary = {
        "benchmark": "gpt_train_step_vs_transformers", "dtype": args.dtype, "threads": args.threads,
        "shape": {k: getattr(args, k) for k in ("layers", "heads", "width", "context", "batch", "vocab")},
        "ms_per_step": {side: 1000 * m for side, m in medians.items()}, "speedup": speedup, "goal": GOAL,
        "loss_before": first, "loss_after_3_steps": after, "quick": args.quick, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    if args.json:
        print(json.dumps(summary))
        return
    for side in names:
        print(f"{side:<13} {1000 * medians[side]:8.2f} ms/step ({args.dtype}, {args.threads} threads)")
    print(f"taa x{speedup:.2f} vs transformers (goal >= {GOAL}); losses agree: before {first['taa']:.6f} / "
          f"{first['transformers']:.6f}, after 3 steps {after['taa']:.6f} / {after['transformers']:.6f}")


if __name__ == "__main__":
    main()
