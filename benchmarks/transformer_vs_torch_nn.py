"""taa's encoder-decoder stacks against ``torch.nn.Transformer``: training-step speed.

What it measures
    The wall time of one training step -- forward through the encoder and the decoder,
    then backward (parameter and input gradients) -- of taa's ``Transformer.encoder`` /
    ``Transformer.decoder`` and of ``torch.nn.Transformer`` built at the same config,
    on the same batch, in the same process. Only the stacks are timed: the inputs are
    already-embedded ``(batch, length, d_model)`` tensors (torch.nn.Transformer has no
    embeddings or output projection). No optimizer step.

Why the comparison is fair
    * same shapes, same layers: post-norm (the paper's) by default, ``--norm-first`` for
      pre-norm; taa is built with ``final_norm=True`` because torch.nn always ends each
      stack with a LayerNorm;
    * same weights: torch.nn's state dict is copied into taa with
      ``taa.torch.convert.torch_nn.from_torch_nn``, and before any timing both are run in eval
      mode on the benchmark batch and their outputs must agree (max abs diff <= 1e-4);
    * same work: training mode on both, the same dropout on residuals, feed-forward and
      attention weights (torch.nn.Transformer applies its one ``dropout`` to all three,
      so taa gets ``attention_dropout=dropout``); the same masks: a causal decoder
      self-attention (``tgt_is_causal=True`` on torch.nn, ``causal=True`` inside taa's
      decoder) and a realistic source key padding (some rows shorter than others) on
      both the encoder self-attention and the decoder cross-attention
      (``--pad-target`` also pads target rows);
    * the same noise: the two are measured interleaved step by step (taa, torch.nn,
      torch.nn, taa, ...) for ``--rounds`` x ``--steps`` steps each, after ``--warmup``
      untimed steps each; each side's figure is the median over all its steps.

The figure of merit is ``taa speed / torch.nn speed`` = median torch.nn step time /
median taa step time; the goal is >= 1.0 (taa no slower than torch.nn). The median
of the per-pair ratios is printed as a cross-check.

Other work on the machine matters a lot on a small CPU box: with 2 threads on 2 cores,
every parallel kernel waits for a core another process holds, so a busy machine
inflates step times several-fold and hurts the side that launches more kernels most.
The script reads /proc/stat around every step and prints how many cores other
processes kept busy; ``--max-other-load 0.2`` counts only steps taken while the rest
of the machine was (nearly) idle and keeps going until it has enough of them, and
``--threads 1 --clock cpu`` measures CPU time, which such load barely disturbs.

Run it (from the repository root, with taa importable)::

    python benchmarks/transformer_vs_torch_nn.py                       # vaswani-base, b=16, 32+32 tokens
    python benchmarks/transformer_vs_torch_nn.py --dtype bfloat16      # CPU bf16 autocast
    python benchmarks/transformer_vs_torch_nn.py --norm-first --json   # pre-norm, one JSON object
    python benchmarks/transformer_vs_torch_nn.py --max-other-load 0.2  # only steps on a quiet machine
    python benchmarks/transformer_vs_torch_nn.py --threads 1 --clock cpu  # robust on a busy machine
    python benchmarks/transformer_vs_torch_nn.py --d-model 256 --heads 4 --d-ff 1024 --layers 3 \
        --batch 32 --source-length 64 --target-length 48 --rounds 5 --steps 3 --warmup 2

The defaults (the paper's base model: d_model=512, 8 heads, d_ff=2048, 6+6 layers,
dropout 0.1; batch 16, 32 source and 32 target tokens; 2 warm-up + 15 timed steps
each) take about 1.5 minutes on an idle 2-core CPU (~1.4 s a step each).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

try:
    import taa  # noqa: F401
except ImportError:  # running from a checkout without an install: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from taa.config import TransformerConfig
from taa.torch.convert.torch_nn import from_torch_nn
from taa.torch.models.transformer import Transformer

TOLERANCE = 1e-4  # max abs difference allowed between the two outputs in eval mode
GRAD_TOLERANCE = 1e-2  # max abs difference of the input gradients, relative to their largest


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Training-step time of taa's encoder-decoder vs torch.nn.Transformer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    shape = parser.add_argument_group("model (defaults: the paper's base model)")
    shape.add_argument("--d-model", type=int, default=512)
    shape.add_argument("--heads", type=int, default=8)
    shape.add_argument("--d-ff", type=int, default=2048)
    shape.add_argument("--layers", type=int, default=6, help="encoder and decoder layers (each)")
    shape.add_argument("--encoder-layers", type=int, default=None, help="overrides --layers for the encoder")
    shape.add_argument("--decoder-layers", type=int, default=None, help="overrides --layers for the decoder")
    shape.add_argument("--dropout", type=float, default=0.1)
    shape.add_argument(
        "--attention-dropout", type=float, default=None,
        help="dropout on attention weights (default: --dropout, as torch.nn.Transformer does)",
    )
    shape.add_argument("--activation", choices=("relu", "gelu"), default="relu")
    shape.add_argument("--norm-first", action="store_true", help="pre-norm instead of the paper's post-norm")
    data = parser.add_argument_group("batch")
    data.add_argument("--batch", type=int, default=16)
    data.add_argument("--source-length", type=int, default=32)
    data.add_argument("--target-length", type=int, default=32)
    data.add_argument(
        "--min-length-fraction", type=float, default=0.5,
        help="padded rows keep between this fraction and all of their tokens",
    )
    data.add_argument("--pad-target", action="store_true", help="pad target rows too (source rows always are)")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--rounds", type=int, default=5, help="rounds of interleaved timed steps")
    timing.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    timing.add_argument("--warmup", type=int, default=2, help="untimed steps per model before the rounds")
    timing.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16: float32 weights under CPU/CUDA bf16 autocast")
    timing.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    timing.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="wall: elapsed time; cpu: this process's CPU time, which other programs on a busy "
        "machine barely disturb (best with --threads 1; with more threads it also counts idle spinning)",
    )
    timing.add_argument("--device", default="cpu")
    timing.add_argument(
        "--max-other-load", type=float, default=None, metavar="CORES",
        help="count only step groups during which other processes kept at most CORES cores busy "
        "(read from /proc/stat, Linux); keeps timing until rounds x steps such groups (or --max-wait)",
    )
    timing.add_argument("--max-wait", type=float, default=900.0, help="seconds to wait for quiet steps")
    timing.add_argument("--seed", type=int, default=0)
    timing.add_argument("--skip-check", action="store_true", help="skip the eval-mode equivalence check")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    args.encoder_layers = args.layers if args.encoder_layers is None else args.encoder_layers
    args.decoder_layers = args.layers if args.decoder_layers is None else args.decoder_layers
    args.attention_dropout = args.dropout if args.attention_dropout is None else args.attention_dropout
    if not 0.0 < args.min_length_fraction <= 1.0:
        parser.error("--min-length-fraction must be in (0, 1]")
    if args.clock == "cpu" and args.device.startswith("cuda"):
        parser.error("--clock cpu measures CPU time; use --clock wall on a GPU")
    if args.max_other_load is not None and other_cpu_seconds() is None:
        parser.error("--max-other-load needs /proc/stat (Linux)")
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--rounds and --steps must be >= 1, --warmup >= 0")
    return args


# --------------------------------------------------------------------------------------
# The two models, with the same weights
# --------------------------------------------------------------------------------------


def build_models(args: argparse.Namespace, device: torch.device) -> tuple[Transformer, nn.Transformer]:
    ref = nn.Transformer(
        d_model=args.d_model,
        nhead=args.heads,
        num_encoder_layers=args.encoder_layers,
        num_decoder_layers=args.decoder_layers,
        dim_feedforward=args.d_ff,
        dropout=args.dropout,
        activation=args.activation,
        batch_first=True,
        norm_first=args.norm_first,
        device=device,
    )
    for module in ref.modules():  # torch.nn has one dropout for all; allow a separate attention one
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = args.attention_dropout
    config = TransformerConfig(
        d_model=args.d_model,
        n_heads=args.heads,
        d_ff=args.d_ff,
        dropout=args.dropout,
        attention_dropout=args.attention_dropout,
        activation=args.activation,
        norm_first=args.norm_first,
        n_encoder_layers=args.encoder_layers,
        n_decoder_layers=args.decoder_layers,
        final_norm=True,  # torch.nn ends each stack with a norm
        # Only the stacks run here; a tiny vocabulary keeps the unused embedding small.
        source_vocab_size=8,
        target_vocab_size=8,
        max_length=max(args.source_length, args.target_length),
    )
    ours = Transformer(config).to(device)
    converted = from_torch_nn(ref.state_dict(), args.encoder_layers, args.decoder_layers)
    result = ours.load_state_dict(converted, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"unexpected keys loading torch.nn weights: {result.unexpected_keys}")
    stack_keys_missing = [k for k in result.missing_keys if k.startswith(("encoder.", "decoder."))]
    if stack_keys_missing:
        raise RuntimeError(f"encoder/decoder keys not covered by from_torch_nn: {stack_keys_missing}")
    return ours, ref


def stack_parameters(ours: Transformer) -> list[nn.Parameter]:
    return [*ours.encoder.parameters(), *ours.decoder.parameters()]


# --------------------------------------------------------------------------------------
# The batch: embedded inputs, padding, masks in each library's convention
# --------------------------------------------------------------------------------------


def lengths_with_padding(batch: int, length: int, min_fraction: float, generator: torch.Generator) -> Tensor:
    """Row 0 full; the rest uniform in [ceil(min_fraction * length), length]: some rows padded."""
    shortest = max(1, math.ceil(min_fraction * length))
    lengths = torch.randint(shortest, length + 1, (batch,), generator=generator)
    lengths[0] = length
    return lengths


def make_batch(args: argparse.Namespace, device: torch.device) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(args.seed)
    b, m, n, d = args.batch, args.source_length, args.target_length, args.d_model
    source_lengths = lengths_with_padding(b, m, args.min_length_fraction, generator)
    source_real = torch.arange(m)[None, :] < source_lengths[:, None]  # (b, m) True at real tokens
    if args.pad_target:
        target_lengths = lengths_with_padding(b, n, args.min_length_fraction, generator)
        target_real = torch.arange(n)[None, :] < target_lengths[:, None]
    else:
        target_real = torch.ones(b, n, dtype=torch.bool)
    batch = {
        "source": torch.randn(b, m, d, generator=generator),
        "target": torch.randn(b, n, d, generator=generator),
        "grad_output": torch.randn(b, n, d, generator=generator),  # d loss / d decoder output
        "source_real": source_real,
        "target_real": target_real,
    }
    return {key: value.to(device) for key, value in batch.items()}


class Step:
    """One model's forward + backward on the batch; ``run`` returns the decoder output."""

    def __init__(self, model: nn.Module, batch: dict[str, Tensor], autocast) -> None:
        self.model = model
        self.autocast = autocast
        # Leaves that want gradients, as the embeddings feeding a real model would.
        self.source = batch["source"].clone().requires_grad_(True)
        self.target = batch["target"].clone().requires_grad_(True)
        self.grad_output = batch["grad_output"]
        self.parameters = [p for p in model.parameters() if p.requires_grad]

    def forward(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def run(self, backward: bool = True) -> tuple[Tensor, Tensor]:
        for p in self.parameters:
            p.grad = None
        self.source.grad = self.target.grad = None
        with self.autocast():
            memory, output = self.forward()
        if backward:
            output.backward(self.grad_output.to(output.dtype))
        return memory, output


class TaaStep(Step):
    def __init__(self, model: Transformer, batch, autocast) -> None:
        super().__init__(model, batch, autocast)
        self.parameters = stack_parameters(model)
        # taa: boolean, True = may attend, broadcast over heads and queries: (b, 1, 1, k)
        self.source_mask = batch["source_real"][:, None, None, :]
        target_real = batch["target_real"]
        self.target_mask = None if bool(target_real.all()) else target_real[:, None, None, :]

    def forward(self) -> tuple[Tensor, Tensor]:
        memory = self.model.encoder(self.source, self.source_mask)
        # the decoder's self-attention is always causal; target_mask adds target padding
        output = self.model.decoder(self.target, memory, self.target_mask, self.source_mask)
        return memory, output


class TorchNNStep(Step):
    def __init__(self, model: nn.Transformer, batch, autocast) -> None:
        super().__init__(model, batch, autocast)
        # torch.nn: key padding True = ignore; causal mask as a float -inf mask plus the hint
        self.source_padding = ~batch["source_real"]
        target_real = batch["target_real"]
        self.target_padding = None if bool(target_real.all()) else ~target_real
        n = batch["target"].shape[1]
        self.causal = nn.Transformer.generate_square_subsequent_mask(n, device=batch["target"].device)

    def forward(self) -> tuple[Tensor, Tensor]:
        ref = self.model
        memory = ref.encoder(self.source, src_key_padding_mask=self.source_padding)
        output = ref.decoder(
            self.target, memory,
            tgt_mask=self.causal,
            tgt_key_padding_mask=self.target_padding,
            memory_key_padding_mask=self.source_padding,
            tgt_is_causal=True,
        )
        return memory, output

    def full_forward(self) -> Tensor:
        """The same computation through ``nn.Transformer.forward`` (used once, in the check)."""
        return self.model(
            self.source, self.target,
            tgt_mask=self.causal,
            src_key_padding_mask=self.source_padding,
            tgt_key_padding_mask=self.target_padding,
            memory_key_padding_mask=self.source_padding,
            tgt_is_causal=True,
        )


# --------------------------------------------------------------------------------------
# Equivalence check, timing
# --------------------------------------------------------------------------------------


def check_equivalence(ours_step: TaaStep, ref_step: TorchNNStep, source_real: Tensor) -> dict[str, float]:
    """Eval mode (no dropout), float32: outputs and input gradients of the two must agree."""
    ours_step.model.eval()
    ref_step.model.eval()
    autocasts = ours_step.autocast, ref_step.autocast
    ours_step.autocast = ref_step.autocast = nullcontext  # the check is in float32
    try:
        ours_memory, ours_output = ours_step.run()
        ref_memory, ref_output = ref_step.run()
        full_output = ref_step.full_forward().detach()
        real = source_real[..., None]  # padded memory rows are never attended to: compare real ones
        diffs = {
            "decoder_output": (ours_output - ref_output).abs().max().item(),
            "decoder_output_vs_nn_transformer_forward": (ours_output - full_output).abs().max().item(),
            "encoder_memory": ((ours_memory - ref_memory).abs() * real).max().item(),
        }
        scale = max(ref_step.source.grad.abs().max().item(), ref_step.target.grad.abs().max().item(), 1e-12)
        grad_diff = max(
            (ours_step.source.grad - ref_step.source.grad).abs().max().item(),
            (ours_step.target.grad - ref_step.target.grad).abs().max().item(),
        )
        diffs["input_grad_relative"] = grad_diff / scale
    finally:
        ours_step.model.train()
        ref_step.model.train()
        ours_step.autocast, ref_step.autocast = autocasts
    bad = {k: v for k, v in diffs.items() if k != "input_grad_relative" and not v <= TOLERANCE}
    if bad:
        raise AssertionError(f"taa and torch.nn disagree in eval mode (max abs diff > {TOLERANCE}): {bad}")
    # Gradients pass back through every layer, so float32 rounding grows with depth
    # (~1e-3 relative at 6+6 layers; 1e-14 in float64): a loose bound that still catches
    # a wrong mapping, which is off by O(1).
    if not diffs["input_grad_relative"] <= GRAD_TOLERANCE:
        raise AssertionError(
            f"input gradients disagree: relative max diff {diffs['input_grad_relative']:.3g} > {GRAD_TOLERANCE}"
        )
    return diffs


CLOCKS = {
    "wall": time.perf_counter,  # what a user waits for
    "cpu": time.process_time,  # CPU time of all this process's threads: robust to other load
}


def other_cpu_seconds() -> Optional[float]:
    """CPU seconds used so far by everything on the machine but this process (Linux), else None."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait is busy
    busy = sum(ticks) - ticks[3] - ticks[4]
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK") - (own.user + own.system)


def timed_step(step: Step, synchronize, clock=time.perf_counter) -> tuple[float, Optional[float]]:
    """(step time by ``clock``, cores the rest of the machine kept busy meanwhile or None)."""
    synchronize()
    others, wall, start = other_cpu_seconds(), time.perf_counter(), clock()
    step.run()
    synchronize()
    elapsed, wall = clock() - start, time.perf_counter() - wall
    others_after = other_cpu_seconds()
    other_cores = None if others is None or others_after is None else max(0.0, others_after - others) / wall
    return elapsed, other_cores


def measure(
    steps: dict[str, Step], args: argparse.Namespace, synchronize, log
) -> tuple[dict[str, list[float]], list[Optional[float]]]:
    """Warm up, then time every model step by step, interleaved; returns times and load.

    Step i of every model forms a group, run back to back in alternating order (A B,
    B A, ...), so a burst of load from elsewhere lands on both sides alike. For each
    group it also records the most cores that other processes kept busy during any of
    its steps. ``rounds`` x ``steps`` groups are run; with ``--max-other-load`` it goes
    on until that many groups stayed under the limit (or ``--max-wait`` runs out).
    """
    names = list(steps)
    for name in names:  # warm-up: allocator, kernels, autograd graph caches
        for _ in range(args.warmup):
            steps[name].run()
    times: dict[str, list[float]] = {name: [] for name in names}
    load: list[Optional[float]] = []
    target = args.rounds * args.steps
    deadline = time.perf_counter() + args.max_wait
    round_ = 0
    while True:
        for i in range(args.steps):
            order = names if (round_ * args.steps + i) % 2 == 0 else names[::-1]
            group, worst = {}, 0.0
            for name in order:
                group[name], other = timed_step(steps[name], synchronize, CLOCKS[args.clock])
                worst = None if other is None or worst is None else max(worst, other)
            for name in names:
                times[name].append(group[name])
            load.append(worst)
        round_ += 1
        recent = [x for x in load[-args.steps:] if x is not None]
        log(
            f"  round {round_}: "
            + ", ".join(f"{name} {1e3 * statistics.median(times[name][-args.steps:]):.1f} ms" for name in names)
            + (f"; other processes up to {max(recent):.2f} cores" if recent else "")
        )
        if args.max_other_load is None:
            if round_ >= args.rounds:
                break
        else:
            quiet = sum(x is not None and x <= args.max_other_load for x in load)
            if quiet >= target:
                break
            if time.perf_counter() > deadline:
                log(f"  --max-wait reached with {quiet}/{target} quiet step groups")
                break
    return times, load


def paired_ratio(fast: list[float], slow: list[float]) -> float:
    """Median over interleaved step pairs of slow/fast: robust to slow drifts in machine load."""
    return statistics.median(s / f for f, s in zip(fast, slow))


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if args.dtype == "bfloat16":
        def autocast():
            return torch.autocast(device.type, dtype=torch.bfloat16)
    else:
        autocast = nullcontext

    ours, ref = build_models(args, device)
    ours.train()
    ref.train()
    batch = make_batch(args, device)
    steps = {"taa": TaaStep(ours, batch, autocast), "torch.nn": TorchNNStep(ref, batch, autocast)}

    b, m, n = args.batch, args.source_length, args.target_length
    log(
        f"config: d_model={args.d_model} heads={args.heads} d_ff={args.d_ff} "
        f"layers={args.encoder_layers}+{args.decoder_layers} dropout={args.dropout} "
        f"attention_dropout={args.attention_dropout} {'pre' if args.norm_first else 'post'}-norm {args.activation}"
    )
    source_tokens = int(batch["source_real"].sum())
    target_tokens = int(batch["target_real"].sum())
    log(
        f"batch: {b} x (source {m}, target {n}); real tokens: source {source_tokens}/{b * m}, "
        f"target {target_tokens}/{b * n}; dtype {args.dtype}; {args.threads} threads on {device}; "
        f"{args.clock} clock; torch {torch.__version__}"
    )

    check = None
    if not args.skip_check:
        check = check_equivalence(steps["taa"], steps["torch.nn"], batch["source_real"])
        log(
            "eval-mode check: max abs diff "
            + ", ".join(f"{k} {v:.1e}" for k, v in check.items() if k != "input_grad_relative")
            + f" (<= {TOLERANCE}); input gradients {check['input_grad_relative']:.1e} relative"
            + f" (<= {GRAD_TOLERANCE}): ok"
        )

    log(
        f"timing: {args.warmup} warm-up + {args.rounds} rounds x {args.steps} steps per model, interleaved"
        + (f", counting only steps while other processes use <= {args.max_other_load} cores"
           if args.max_other_load is not None else "")
    )
    start = time.perf_counter()
    times, load = measure(steps, args, synchronize, log)
    elapsed = time.perf_counter() - start

    groups = len(load)
    keep = list(range(groups))
    if args.max_other_load is not None:
        keep = [i for i, x in enumerate(load) if x is not None and x <= args.max_other_load]
        if not keep:
            log("  no step stayed under --max-other-load: the figures below use every step")
            keep = list(range(groups))
    kept = {name: [samples[i] for i in keep] for name, samples in times.items()}
    known_load = [load[i] for i in keep if load[i] is not None]
    other_load = statistics.fmean(known_load) if known_load else None

    tokens = b * (m + n)  # padded positions are computed too, by both
    figures = {}
    for name, samples in kept.items():
        median = statistics.median(samples)
        figures[name] = {
            "median_ms": 1e3 * median,
            "min_ms": 1e3 * min(samples),
            "mean_ms": 1e3 * statistics.fmean(samples),
            "stdev_ms": 1e3 * statistics.stdev(samples) if len(samples) > 1 else 0.0,
            "tokens_per_s": tokens / median,
            "samples": len(samples),
        }
    ratio = figures["torch.nn"]["median_ms"] / figures["taa"]["median_ms"]
    pair_ratio = paired_ratio(kept["taa"], kept["torch.nn"])

    log("")
    log(f"{'':10s} {'median ms/step':>15s} {'min ms':>9s} {'stdev ms':>9s} {'tokens/s':>10s}")
    for name, f in figures.items():
        log(f"{name:10s} {f['median_ms']:15.1f} {f['min_ms']:9.1f} {f['stdev_ms']:9.1f} {f['tokens_per_s']:10.0f}")
    log(
        f"{len(keep)} of {groups} step groups counted, timed for {elapsed:.0f} s; "
        f"median of per-step-pair ratios {pair_ratio:.2f}x"
        + (f"; other processes kept {other_load:.2f} of {os.cpu_count()} cores busy on average"
           " (their load inflates and scatters the times: see --max-other-load)"
           if other_load is not None else "")
    )
    if args.json:
        print(json.dumps({
            "benchmark": "transformer_vs_torch_nn",
            "config": {
                "d_model": args.d_model, "n_heads": args.heads, "d_ff": args.d_ff,
                "n_encoder_layers": args.encoder_layers, "n_decoder_layers": args.decoder_layers,
                "dropout": args.dropout, "attention_dropout": args.attention_dropout,
                "activation": args.activation, "norm_first": args.norm_first,
            },
            "batch": {"size": b, "source_length": m, "target_length": n,
                      "real_source_tokens": source_tokens, "real_target_tokens": target_tokens,
                      "pad_target": args.pad_target},
            "dtype": args.dtype, "threads": args.threads, "device": str(device), "clock": args.clock,
            "torch": torch.__version__, "python": platform.python_version(),
            "rounds": args.rounds, "steps_per_round": args.steps, "warmup": args.warmup,
            "check_max_abs_diff": check,
            "taa": figures["taa"], "torch_nn": figures["torch.nn"],
            "tokens_per_step": tokens,
            "speed_ratio": ratio,
            "paired_speed_ratio": pair_ratio,
            "step_groups": {"counted": len(keep), "timed": groups},
            "max_other_load": args.max_other_load,
            "mean_other_load_cores": other_load,
            "goal_met": ratio >= 1.0,
        }))
    else:
        print(f"taa/torch.nn speed ratio: {ratio:.2f}x (goal >= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
