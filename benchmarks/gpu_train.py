"""GPT training throughput on one GPU: tokens per second and model FLOPs utilisation (MFU).

What it measures
    Training steps of taa's GPT (the ``gpt2-small`` preset by default: 124M parameters,
    context 1024) on one device: forward, the language-model task's loss
    (``taa.tasks.language_model.language_model_loss``, the mean next-token cross-entropy),
    backward, gradient clipping at 1.0 and an AdamW update from taa's ``make_optimizer``
    (fused, unless ``--no-fused-adamw``), under bfloat16 autocast (``--dtype``).
    Tokens are random (no download). Attention takes the fused kernel
    (``F.scaled_dot_product_attention`` with ``is_causal=True``): on a GPU
    ``taa.torch.kernels.use_fused_attention`` always chooses it. Dropout is 0 by default, as in
    nanoGPT's pretraining config; ``--compile`` compiles the model together with its loss
    (nanoGPT's forward returns its loss too, so both compile the same work).

    Steps after ``--warmup`` untimed ones are timed by CUDA events recorded between steps
    (no synchronisation inside the timed region; ``torch.cuda.synchronize()`` before and
    after it). Printed: the median step time, tokens per second, MFU and the peak memory
    (``torch.cuda.max_memory_allocated``).

The FLOPs count (PaLM, Chowdhery et al. 2022, appendix B; nanoGPT's ``estimate_mfu``)
    model FLOPs per token = 6 N + 12 L d T
    * 6 N: a forward and a backward pass cost 2 and 4 FLOPs per weight per token. N counts
      the weights that take part in a product: every parameter except the position table,
      which is a lookup. The token embedding counts because the output head reuses it (it
      would not with an untied head, when the head counts instead). This is nanoGPT's
      ``get_num_params(non_embedding=True)``: gpt2-small has 124,439,808 parameters and
      N = 124,439,808 - 1024 x 768 = 123,653,376.
    * 12 L d T: attention's two products (scores Q K^T and the weighted sum of V), 2 d T
      multiply-adds each per token and layer, times 3 for forward and backward
      (L layers, d = d_model = heads x head size, T = context). The causal mask would halve
      them; like PaLM and nanoGPT this counts the full square.
    MFU = model FLOPs per token x tokens per step / step time / peak. Both figures are
    printed: with the attention term (PaLM's MFU) and without (6 N alone).

Peak bf16 dense tensor FLOPS, from NVIDIA's datasheets (the sparsity figures halved), by
``torch.cuda.get_device_name()``: see :data:`PEAK_BF16_TFLOPS`. Another GPU needs
``--peak-tflops``. On a CPU MFU is n/a unless ``--peak-tflops`` is given.

Anchors printed beside the measured MFU:
    * nanoGPT at 124M on an A100 without compile: about 37% MFU (the reference figure this
      benchmark was set against; nanoGPT's README itself states iteration times only,
      ~250 ms eager and ~135 ms compiled, not an MFU);
    * the goal: >= 50% MFU on an H100.

Run it (from the repository root)::

    python benchmarks/gpu_train.py                          # gpt2-small, batch 16 x 1024, eager
    python benchmarks/gpu_train.py --compile
    python benchmarks/gpu_train.py --device cpu --smoke     # 2 layers, 64 wide, context 64, 3 steps
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

if importlib.util.find_spec("taa") is None:  # running from a checkout without an install: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from taa import registry
from taa.config import PRESETS, ConfigError, TrainConfig, preset
from taa.tasks.language_model import LanguageModelBatch, language_model_loss
from taa.torch.training.loop import autocast, make_optimizer

# Peak dense bf16 tensor TFLOPS (FP32 accumulate), matched against the device name in order
# (the first match wins, so the specific names come first). NVIDIA's datasheets print the
# figure with 2:4 sparsity; the dense one is half of it.
PEAK_BF16_TFLOPS: tuple[tuple[str, float, str], ...] = (
    (r"\bH200 NVL\b", 835.0, "H200 NVL (datasheet: 1,671 sparse)"),
    (r"\bH200\b", 989.0, "H200 SXM (datasheet: 1,979 sparse)"),
    (r"\bH100 PCIe\b", 756.0, "H100 PCIe (datasheet: 1,513 sparse)"),
    (r"\bH100 NVL\b", 835.0, "H100 NVL (datasheet: 1,671 sparse)"),
    (r"\bH100\b", 989.0, "H100 SXM (datasheet: 1,979 sparse)"),  # "NVIDIA H100 80GB HBM3"
    (r"\bA100\b", 312.0, "A100 (datasheet: 312 dense, 624 sparse)"),  # SXM4 and PCIe alike
    (r"\bL4\b", 121.0, "L4 (datasheet: 242 sparse)"),
    # AWS's A10G has no NVIDIA datasheet of its own: the A10's figure, approximately.
    (r"\bA10G?\b", 125.0, "A10 (datasheet: 125 dense, 250 sparse)"),
)

NANOGPT_A100_EAGER_MFU = 0.37  # see the module docstring: the figure this benchmark was set against
GOAL_H100_MFU = 0.50

# --smoke: a model small enough for a CPU, every part of the real step still there.
SMOKE = dict(n_layers=2, d_model=64, n_heads=4, d_ff=256, context=64, steps=3, warmup=1, batch_size=2)


# ------------------------------------------------------------------------------ the FLOPs count

def matmul_parameters(model: nn.Module) -> int:
    """N of 6 N: the distinct parameters minus the tables that are only looked up (positions;
    the token embedding too when the output head does not reuse it)."""
    lookups = ["position_embedding."]
    if not getattr(model.config, "tie_output", True):
        lookups.append("token_embedding.")
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(tuple(lookups)))


def flops_per_token(n: int, n_layers: int, d_model: int, context: int, attention: bool = True) -> int:
    """PaLM's model FLOPs per token of a training step: 6 N, plus 12 L d T for attention."""
    return 6 * n + (12 * n_layers * d_model * context if attention else 0)


def utilisation(flops_per_step: float, seconds_per_step: float, peak_tflops: Optional[float]) -> Optional[float]:
    """Model FLOPs per second as a fraction of the peak; None without a peak."""
    if not peak_tflops:
        return None
    return flops_per_step / seconds_per_step / (peak_tflops * 1e12)


# ------------------------------------------------------------------------------ the device

def gpu_name(device: torch.device) -> str:
    """The name the peak table is matched against ("NVIDIA H100 80GB HBM3")."""
    return torch.cuda.get_device_name(device)


def table_peak(name: str) -> Optional[tuple[float, str]]:
    """(dense bf16 TFLOPS, which datasheet) for a GPU name, or None for a name not in the table."""
    for pattern, tflops, source in PEAK_BF16_TFLOPS:
        if re.search(pattern, name):
            return tflops, source
    return None


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch {torch.__version__} sees no CUDA GPU here; use --device cpu")
    if device.type not in ("cuda", "cpu"):
        raise SystemExit(f"--device {name}: this benchmark runs on cuda or cpu")
    return device


def device_and_peak(args: argparse.Namespace, device: torch.device) -> tuple[str, Optional[float], str]:
    """(device name, peak TFLOPS or None, where the peak comes from)."""
    if device.type == "cuda":
        name = gpu_name(device)
    else:
        name = platform.processor() or platform.machine() or "cpu"
    if args.peak_tflops:
        return name, args.peak_tflops, "--peak-tflops"
    if device.type != "cuda":
        return name, None, "a CPU: pass --peak-tflops for an MFU"
    found = table_peak(name)
    if found is None:
        raise SystemExit(f"no peak bf16 figure for GPU {name!r}: pass --peak-tflops (its dense bf16 TFLOPS)")
    return name, found[0], found[1]


# ------------------------------------------------------------------------------ the model and the step

def build_model(args: argparse.Namespace) -> nn.Module:
    """The preset's model class from the registry, at the benchmark's context and dropout."""
    try:
        family = registry.family_of_preset(args.preset)
    except ConfigError as error:
        raise SystemExit(f"--preset: {error}") from None
    if family.is_encoder_decoder or not family.generates_text:
        raise SystemExit(f"--preset {args.preset}: a {family.name} model; this benchmark trains decoder-only "
                         f"language models ({', '.join(registry.presets('gpt'))})")
    overrides: dict[str, Any] = dict(max_length=args.context, dropout=args.dropout, attention_dropout=args.dropout)
    if args.smoke:
        overrides.update({k: SMOKE[k] for k in ("n_layers", "d_model", "n_heads", "d_ff")})
    if args.vocab_size:  # special tokens the smaller vocabulary lacks are dropped (random tokens need none)
        overrides["vocab_size"] = args.vocab_size
        fields = PRESETS[args.preset][1]
        overrides.update({k: None for k in ("bos_id", "eos_id", "pad_id") if (fields.get(k) or 0) >= args.vocab_size})
    try:
        config = preset(args.preset, **overrides)
    except ConfigError as error:
        raise SystemExit(f"--preset {args.preset}: {error}") from None
    return registry.implementation(family.default_architecture)(config)


class LanguageModelStep(nn.Module):
    """The model and the language-model task's loss in one module (what ``--compile`` compiles)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.compute_loss = language_model_loss()

    def forward(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """inputs, targets (b, n) -> the mean next-token cross-entropy."""
        total, count = self.compute_loss(self.model, LanguageModelBatch(inputs, targets))
        return total / count


def make_adamw(model: nn.Module, fused: bool) -> torch.optim.Optimizer:
    """taa's AdamW (nanoGPT's hyper-parameters); ``fused=False`` rebuilds it unfused (foreach kernels on CUDA)."""
    train = TrainConfig(lr=6e-4, adam_beta1=0.9, adam_beta2=0.95, adam_eps=1e-8, weight_decay=0.1)
    optimizer = make_optimizer(model, train)
    if fused:
        return optimizer
    groups = [{k: v for k, v in group.items() if k not in ("fused", "foreach")} for group in optimizer.param_groups]
    return type(optimizer)(groups, fused=False)


def random_batches(vocab: int, batch: int, context: int, count: int, device: torch.device, seed: int):
    """``count`` (inputs, targets) pairs of random tokens (b, n), made once on the device."""
    generator = torch.Generator().manual_seed(seed)
    windows = [torch.randint(0, vocab, (batch, context + 1), generator=generator) for _ in range(count)]
    return [(w[:, :-1].contiguous().to(device), w[:, 1:].contiguous().to(device)) for w in windows]


# ------------------------------------------------------------------------------ the run

def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="gpt2-small")
    parser.add_argument("--context", type=int, default=None, help="tokens per sequence (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per micro-batch")
    parser.add_argument("--grad-accumulation", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="optimizer steps before the timed ones")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model and its loss")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--fused-adamw", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak (overrides the table)")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--vocab-size", type=int, default=None, help="e.g. 50304, nanoGPT's padded vocabulary")
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="2 layers, d_model 64, context 64, batch 2, 3 steps: a check that it runs, on a CPU too")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.smoke:
        args.context, args.steps, args.warmup, args.batch_size = (
            SMOKE["context"], SMOKE["steps"], SMOKE["warmup"], SMOKE["batch_size"])
    if args.context is None:
        args.context = preset(args.preset).max_length if args.preset in PRESETS else 1024
    for name in ("context", "batch_size", "grad_accumulation", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Builds, warms up and times the training steps; returns the figures."""
    device = resolve_device(args.device)
    name, peak, peak_source = device_and_peak(args, device)
    torch.manual_seed(args.seed)
    model = build_model(args).to(device).train()
    config = model.config
    step_module: nn.Module = LanguageModelStep(model)
    if args.compile:
        step_module = torch.compile(step_module)
    optimizer = make_adamw(model, args.fused_adamw)
    parameters = list(model.parameters())
    micro_batches = random_batches(config.vocab_size, args.batch_size, args.context,
                                   min(8, (args.warmup + args.steps) * args.grad_accumulation), device, args.seed)
    position = 0

    def train_step() -> Tensor:
        nonlocal position
        for _ in range(args.grad_accumulation):
            inputs, targets = micro_batches[position % len(micro_batches)]
            position += 1
            with autocast(args.dtype, device):
                loss = step_module(inputs, targets)
            (loss / args.grad_accumulation).backward()
        if args.grad_clip > 0:
            nn.utils.clip_grad_norm_(parameters, args.grad_clip)  # no host sync: the norm stays on the device
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    first_loss = float(train_step())  # the first step compiles under --compile
    first_step_s = time.perf_counter() - started
    for _ in range(max(0, args.warmup - 1)):
        train_step()

    seconds: list[float] = []
    if cuda:
        torch.cuda.synchronize(device)
        events = [torch.cuda.Event(enable_timing=True) for _ in range(args.steps + 1)]
        wall = time.perf_counter()
        events[0].record()
        for index in range(args.steps):
            loss = train_step()
            events[index + 1].record()
        torch.cuda.synchronize(device)
        wall = time.perf_counter() - wall
        seconds = [events[i].elapsed_time(events[i + 1]) / 1000 for i in range(args.steps)]
    else:
        wall = time.perf_counter()
        for _ in range(args.steps):
            start = time.perf_counter()
            loss = train_step()
            seconds.append(time.perf_counter() - start)
        wall = time.perf_counter() - wall
    last_loss = float(loss)
    if not (math.isfinite(first_loss) and math.isfinite(last_loss)):
        raise SystemExit(f"the loss is not finite: first {first_loss}, last {last_loss}")

    median = statistics.median(seconds)
    tokens_per_step = args.batch_size * args.context * args.grad_accumulation
    n = matmul_parameters(model)
    per_token = {attention: flops_per_token(n, config.n_layers, config.d_model, args.context, attention)
                 for attention in (True, False)}
    mfu = {attention: utilisation(per_token[attention] * tokens_per_step, median, peak) for attention in (True, False)}
    return {
        "benchmark": "gpu_train", "preset": args.preset, "smoke": args.smoke, "device": name,
        "device_type": device.type, "dtype": args.dtype, "compile": args.compile, "fused_adamw": args.fused_adamw,
        "shape": {"n_layers": config.n_layers, "d_model": config.d_model, "n_heads": config.n_heads,
                  "d_ff": config.d_ff, "vocab_size": config.vocab_size, "context": args.context,
                  "batch_size": args.batch_size, "grad_accumulation": args.grad_accumulation},
        "parameters": sum(p.numel() for p in parameters), "matmul_parameters": n,
        "tokens_per_step": tokens_per_step,
        "flops_per_token": per_token[True], "flops_per_token_without_attention": per_token[False],
        "flops_per_step": per_token[True] * tokens_per_step,
        "steps": args.steps, "warmup": args.warmup, "first_step_s": first_step_s,
        "step_ms_median": 1000 * median, "step_ms_mean": 1000 * wall / args.steps,
        "tokens_per_s": tokens_per_step / median,
        "peak_tflops": peak, "peak_source": peak_source,
        "mfu": mfu[True], "mfu_without_attention": mfu[False],
        "max_memory_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "loss_first": first_loss, "loss_last": last_loss,
        "nanogpt_a100_eager_mfu": NANOGPT_A100_EAGER_MFU, "goal_h100_mfu": GOAL_H100_MFU,
        "torch": torch.__version__,
    }


def percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def report(s: dict[str, Any]) -> str:
    shape = s["shape"]
    memory = s["max_memory_allocated_gib"]
    mfu = s["mfu"]
    peak = "n/a" if s["peak_tflops"] is None else f"{s['peak_tflops']:g} TFLOPS bf16 dense"
    on_gpu = mfu is not None and s["device_type"] == "cuda"
    goal = f"x{mfu / GOAL_H100_MFU:.2f} of the goal" if on_gpu else "n/a (no GPU)"
    anchor = f"x{mfu / NANOGPT_A100_EAGER_MFU:.2f}" if on_gpu else "n/a (no GPU)"
    lines = [
        f"taa GPT training, {s['preset']}{' (smoke)' if s['smoke'] else ''}: {shape['n_layers']} layers, "
        f"d_model {shape['d_model']}, {shape['n_heads']} heads, vocabulary {shape['vocab_size']}, "
        f"context {shape['context']}; {s['dtype']}, {'compiled' if s['compile'] else 'eager'}, "
        f"AdamW {'fused' if s['fused_adamw'] else 'not fused'}, torch {s['torch']}",
        f"device          {s['device']}; peak {peak} ({s['peak_source']})",
        f"parameters      {s['parameters']:,}; N = {s['matmul_parameters']:,} (position table left out)",
        f"tokens/step     {s['tokens_per_step']:,} = {shape['batch_size']} x {shape['context']} "
        f"x {shape['grad_accumulation']} accumulation",
        f"step time       median {s['step_ms_median']:.2f} ms, mean {s['step_ms_mean']:.2f} ms over {s['steps']} "
        f"steps after {s['warmup']} warm-up (first step {s['first_step_s']:.1f} s)",
        f"tokens/s        {s['tokens_per_s']:,.0f}",
        f"FLOPs/token     {s['flops_per_token']:,} = 6N + 12*L*d*T (PaLM); 6N alone "
        f"{s['flops_per_token_without_attention']:,}",
        f"MFU             {percent(mfu)} with the attention term, {percent(s['mfu_without_attention'])} without",
        f"peak memory     {'n/a' if memory is None else f'{memory:.2f} GiB'} (torch.cuda.max_memory_allocated)",
        f"loss            {s['loss_first']:.3f} first step, {s['loss_last']:.3f} last (random tokens)",
        f"nanoGPT anchor  ~{percent(NANOGPT_A100_EAGER_MFU)} MFU, 124M, A100, no compile: measured {anchor}",
        f"goal            >= {percent(GOAL_H100_MFU)} MFU on an H100: measured {percent(mfu)}, {goal}",
    ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    summary = run(args)
    print(json.dumps(summary) if args.json else report(summary))
    return summary


if __name__ == "__main__":
    main()
