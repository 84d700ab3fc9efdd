"""The Flax port against taa.torch, side by side in one process: training steps and greedy generation.

What it measures
    * ``train``: the character GPT's training step at nanoGPT's CPU shape for Tiny
      Shakespeare (4 layers, 4 heads, 128 wide, context 64, batch 12, 65 tokens, no
      dropout), with the char recipe's optimizer (Muon + AdamW), label smoothing and
      clipping: taa.torch runs ``Trainer._step`` (forward, backward, clipping, the
      non-finite check, the update); Flax runs :class:`taa.flax.training.TrainStep` (the
      same, compiled by ``jax.jit`` as one program). In float32 and in bfloat16 (torch's
      autocast; Flax computes with bfloat16 copies of the float32 weights). Goal: Flax
      >= 1.3x torch's speed.
    * ``multi30k``: the translation recipe's training step (translate-multi30k.yaml's
      Transformer: 3+3 layers, 256 wide, 8,000 shared tokens; Muon, label smoothing 0.1)
      on a batch of the recipe's size (``max_tokens`` 2,048 padded tokens a side: 96
      sentences of 21 source and 22 target tokens by default). Printed: target tokens per
      second of each side.
    * ``generate``: greedy generation of 128 tokens after a 16-token prompt with nanoGPT's
      shakespeare_char model (6 layers, 6 heads, 384 wide, 65 tokens, 256 positions),
      batch 1 and 8: :func:`taa.flax.generate.generate` (one compiled program, a fixed-size
      KV cache) against :func:`taa.torch.generate.generate` and transformers'
      ``GPT2LMHeadModel.generate`` (its dynamic cache).

    Printed: each side's median, and the ratio Flax speed / other speed (the other's median
    time / Flax's: above 1, Flax is faster).

Why the comparison is fair
    * same weights: the torch model's state dict is loaded into the Flax model (and
      transformers' GPT-2 is converted to taa with ``taa.convert.hf_gpt2``); before any
      timing the training sides compute the loss of the same batch (equal within 1e-4 in
      float32) and train three identical steps, after which their losses must still agree;
      the generating sides must produce identical tokens;
    * the same batches, the same recipe settings (one ``TrainConfig``), the same dtype, the
      same two threads (torch's ``--threads``; XLA's CPU client uses the machine's cores);
    * interleaved rounds (torch, Flax, Flax, torch, ...) after warm-up (Flax compiles
      then, once per shape: the compile time is printed apart); medians.

Run it (from the repository root)::

    python benchmarks/flax_vs_torch.py                 # everything, ~5 minutes idle
    python benchmarks/flax_vs_torch.py --parts train --dtypes float32
    python benchmarks/flax_vs_torch.py --quick         # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("taa") is None:  # running from a checkout without an install: use ./src
    sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark's model pair

from taa.config import GPTConfig, RecipeConfig  # noqa: E402
from taa.tasks.language_model import LanguageModelBatch, language_model_loss  # noqa: E402
from taa.torch.training import Seq2SeqBatch, Trainer, seq2seq_loss  # noqa: E402

RECIPES = ROOT / "src" / "taa" / "recipes"
PARTS = ("train", "multi30k", "generate")
GOAL = 1.3  # the training step: Flax at least this many times torch's speed


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"],
                        help="the training steps' number formats")
    parser.add_argument("--threads", type=int, default=2, help="torch's threads")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--mt-batch", type=int, default=96, help="Multi30k: sentences per batch")
    parser.add_argument("--mt-source", type=int, default=21, help="Multi30k: padded source tokens")
    parser.add_argument("--mt-target", type=int, default=22, help="Multi30k: padded target tokens")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per side (interleaved)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="generation batch sizes")
    parser.add_argument("--rounds", type=int, default=5, help="timed generations per side (interleaved)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny models, 2 steps, 1 round, 8 tokens")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.rounds, args.new_tokens, args.batches = 2, 1, 1, 8, [2]
        args.mt_batch, args.mt_source, args.mt_target = 4, 6, 7
    return args


def interleaved(sides: dict[str, Callable[[int], None]], warmup: int, rounds: int) -> dict[str, float]:
    """Median milliseconds of each side's call, the order alternating round by round;
    ``warmup`` rounds first, untimed. Each call gets the round's index."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            sides[name](index)
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def flax_twin(torch_model: torch.nn.Module, flax_class: type, config):
    """The Flax model of ``config`` holding the torch model's weights, in the torch model's mode."""
    from flax import nnx

    from taa.flax.weights import load_state_dict

    model = flax_class(config, rngs=nnx.Rngs(0))
    load_state_dict(model, {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}, "the torch model")
    model.train() if torch_model.training else model.eval()
    return model


class Feeder:
    """The torch trainer's batch stream: the batch each step is handed, one at a time."""

    def __init__(self) -> None:
        self.batch = None

    def __next__(self):
        return self.batch


def step_pair(torch_model, flax_model, train, torch_loss, flax_loss, d_model: int):
    """(torch step, Flax step, loss of both on a batch): each step trains on the batch it is given."""
    from flax import nnx

    from taa.flax.training import TrainStep, make_optimizer
    from taa.flax.training.step import computing_in

    feeder = Feeder()
    trainer = Trainer(torch_model, train, torch_loss, feeder, d_model=d_model, progress=False)
    flax_step = TrainStep(flax_model, make_optimizer(flax_model, train), flax_loss, train)

    def torch_step(batch) -> None:
        feeder.batch = batch
        trainer._step()
        trainer.state.step += 1

    def flax_train(batch) -> None:
        flax_step([batch], trainer.learning_rate())

    def losses(torch_batch, flax_batch) -> dict[str, float]:
        torch_model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=train.dtype == "bfloat16"):
            total, count = torch_loss(torch_model, torch_batch)
        torch_model.train()
        flax_step.write_to(flax_model)
        flax_model.eval()
        graphdef, state = nnx.split(flax_model)
        cast = nnx.merge(graphdef, computing_in(train.dtype)(state))
        flax_total, flax_count = flax_loss(cast, flax_batch)
        flax_model.train()
        return {"torch": float(total) / int(count), "flax": float(flax_total) / int(flax_count)}

    return torch_step, flax_train, losses, flax_step


def compare_steps(args, torch_model, flax_model, train, torch_loss, flax_loss, make_batch, d_model: int) -> dict:
    """Check both trainers agree on the same weights and batches, then time their steps interleaved."""
    torch_step, flax_train, losses, flax_step = step_pair(torch_model, flax_model, train, torch_loss, flax_loss,
                                                          d_model)
    tolerance = 1e-4 if train.dtype == "float32" else 3e-2
    check = [make_batch(args.seed + 1 + i) for i in range(4)]
    before = losses(*check[0])
    if abs(before["torch"] - before["flax"]) > tolerance:
        raise SystemExit(f"losses differ before training: {before}")
    start = time.perf_counter()
    for torch_batch, flax_batch in check[:3]:
        torch_step(torch_batch)
        flax_train(flax_batch)
    first_steps = time.perf_counter() - start  # Flax's compile is in here
    after = losses(*check[3])
    if abs(after["torch"] - after["flax"]) > 10 * tolerance:
        raise SystemExit(f"losses differ after 3 identical steps: {after}")
    batches = [make_batch(args.seed + 100 + i) for i in range(args.warmup + args.steps)]
    medians = interleaved({"torch": lambda i: torch_step(batches[i][0]), "flax": lambda i: flax_train(batches[i][1])},
                          args.warmup, args.steps)
    return {"ms_per_step": medians, "ratio": medians["torch"] / medians["flax"], "loss_before": before,
            "loss_after_3_steps": after, "compiles": flax_step.compiles, "first_3_steps_s": first_steps}


def char_gpt_steps(args, dtype: str) -> dict:
    """The char recipe's step at nanoGPT's CPU shape, in ``dtype``."""
    from taa.flax.models.gpt import GPT as FlaxGPT
    from taa.flax.training import label_smoothed_cross_entropy
    from taa.torch.models.gpt import GPT as TorchGPT

    recipe = RecipeConfig.load(RECIPES / "gpt-shakespeare-char.yaml")
    train = dataclasses.replace(recipe.train, dtype=dtype, max_minutes=0.0, steps=args.warmup + args.steps + 10)
    config: GPTConfig = dataclasses.replace(
        recipe.model, n_layers=args.layers, n_heads=args.heads, d_model=args.width, d_ff=4 * args.width,
        max_length=args.context, vocab_size=args.vocab, dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(args.seed)
    torch_model = TorchGPT(config).train()
    flax_model = flax_twin(torch_model, FlaxGPT, config)

    def make_batch(seed: int):
        window = np.random.default_rng(seed).integers(0, args.vocab, (args.batch, args.context + 1))
        return (LanguageModelBatch(torch.from_numpy(window[:, :-1]), torch.from_numpy(window[:, 1:])),
                LanguageModelBatch(window[:, :-1].astype(np.int32), window[:, 1:].astype(np.int32)))

    result = compare_steps(args, torch_model, flax_model, train, language_model_loss(train.label_smoothing),
                           language_model_loss(train.label_smoothing, label_smoothed_cross_entropy), make_batch,
                           config.d_model)
    result["tokens_per_step"] = args.batch * args.context
    return result


def multi30k_steps(args, dtype: str) -> dict:
    """The Multi30k recipe's Transformer and step on a batch of its size, in ``dtype``."""
    from taa.flax.models.transformer import Transformer as FlaxTransformer
    from taa.flax.training import seq2seq_loss as flax_seq2seq_loss
    from taa.torch.models.transformer import Transformer as TorchTransformer

    recipe = RecipeConfig.load(RECIPES / "translate-multi30k.yaml")
    vocab = recipe.data.vocab_size
    config = dataclasses.replace(recipe.model, source_vocab_size=vocab, target_vocab_size=vocab, dropout=0.0)
    if args.quick:
        config = dataclasses.replace(config, d_model=32, n_heads=2, d_ff=64, n_encoder_layers=1, n_decoder_layers=1)
    train = dataclasses.replace(recipe.train, dtype=dtype, max_minutes=0.0, steps=args.warmup + args.steps + 10)
    pad = 0
    torch.manual_seed(args.seed)
    torch_model = TorchTransformer(config).train()
    flax_model = flax_twin(torch_model, FlaxTransformer, config)

    def make_batch(seed: int):
        rng = np.random.default_rng(seed)
        source = rng.integers(4, vocab, (args.mt_batch, args.mt_source))
        target = rng.integers(4, vocab, (args.mt_batch, args.mt_target + 1))
        fields = (source, target[:, :-1], target[:, 1:])
        return (Seq2SeqBatch(*(torch.from_numpy(x) for x in fields)),
                Seq2SeqBatch(*(x.astype(np.int32) for x in fields)))

    result = compare_steps(args, torch_model, flax_model, train, seq2seq_loss(train.label_smoothing, pad),
                           flax_seq2seq_loss(train.label_smoothing, pad), make_batch, config.d_model)
    target_tokens = args.mt_batch * args.mt_target
    result["target_tokens_per_s"] = {side: 1000 * target_tokens / ms for side, ms in result["ms_per_step"].items()}
    result["batch"] = {"sentences": args.mt_batch, "source": args.mt_source, "target": args.mt_target}
    return result


def generation(args) -> list[dict]:
    """Greedy generation on the same weights: Flax, taa.torch and transformers, interleaved."""
    import jax.numpy as jnp
    from generate_vs_transformers import SHAPES, build_pair

    from taa.flax.generate import generate as flax_generate
    from taa.flax.models.gpt import GPT as FlaxGPT
    from taa.torch.generate import generate as torch_generate

    shape = dict(SHAPES["shakespeare"])
    if args.quick:
        shape.update(n_layer=2, n_head=2, n_embd=32)
    theirs, ours = build_pair(shape, args.seed)
    flax_model = flax_twin(ours, FlaxGPT, ours.config)
    rows = []
    for batch in args.batches:
        prompt = np.random.default_rng(batch).integers(1, shape["vocab_size"], (batch, args.prompt_tokens))
        torch_prompt, flax_prompt = torch.from_numpy(prompt), jnp.asarray(prompt, jnp.int32)
        new = args.new_tokens

        def run_torch(_=0):
            return torch_generate(ours, torch_prompt, max_new_tokens=new, eos_id=-1).numpy()

        def run_flax(_=0):
            return np.asarray(flax_generate(flax_model, flax_prompt, max_new_tokens=new, eos_id=-1))

        def run_transformers(_=0):
            with torch.inference_mode():
                return theirs.generate(torch_prompt, attention_mask=torch.ones_like(torch_prompt), max_new_tokens=new,
                                       do_sample=False, num_beams=1).numpy()

        start = time.perf_counter()
        flax_tokens = run_flax()  # the first call compiles
        compile_s = time.perf_counter() - start
        expected = run_torch()
        if not (np.array_equal(flax_tokens, expected) and np.array_equal(run_transformers(), expected)):
            raise SystemExit(f"batch {batch}: the three sides' tokens differ: not timing different work")
        medians = interleaved({"flax": run_flax, "torch": run_torch, "transformers": run_transformers}, 0,
                              args.rounds)
        rows.append({"batch": batch, "new_tokens": new, "ms_per_generation": medians,
                     "flax_over_torch": medians["torch"] / medians["flax"],
                     "flax_over_transformers": medians["transformers"] / medians["flax"],
                     "flax_first_call_s": compile_s,
                     "tokens_per_s": {side: 1000 * batch * new / ms for side, ms in medians.items()}})
    return rows


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    import flax
    import jax

    summary = {"benchmark": "flax_vs_torch", "threads": args.threads, "quick": args.quick, "jax": jax.__version__,
               "flax": flax.__version__, "torch": torch.__version__, "device": str(jax.devices()[0]),
               "machine": platform.processor() or platform.machine()}
    if "train" in args.parts:
        summary["train_step"] = {dtype: char_gpt_steps(args, dtype) for dtype in args.dtypes}
    if "multi30k" in args.parts:
        summary["multi30k_step"] = {dtype: multi30k_steps(args, dtype) for dtype in args.dtypes}
    if "generate" in args.parts:
        summary["generate"] = generation(args)
    if args.json:
        print(json.dumps(summary))
        return summary
    for dtype, step in summary.get("train_step", {}).items():
        ms = step["ms_per_step"]
        print(f"char GPT training step ({dtype}): torch {ms['torch']:.2f} ms, flax {ms['flax']:.2f} ms; "
              f"flax x{step['ratio']:.2f} torch's speed (goal >= {GOAL}); {step['compiles']} compile(s), "
              f"first 3 steps {step['first_3_steps_s']:.1f} s")
    for dtype, step in summary.get("multi30k_step", {}).items():
        rate = step["target_tokens_per_s"]
        print(f"Multi30k training step ({dtype}, {step['batch']['sentences']} x {step['batch']['target']} target "
              f"tokens): torch {rate['torch']:,.0f} tok/s, flax {rate['flax']:,.0f} tok/s; flax x{step['ratio']:.2f}")
    for row in summary.get("generate", []):
        ms = row["ms_per_generation"]
        print(f"greedy generation, batch {row['batch']}, {row['new_tokens']} tokens: flax {ms['flax']:.1f} ms, "
              f"torch {ms['torch']:.1f} ms, transformers {ms['transformers']:.1f} ms; flax x{row['flax_over_torch']:.2f} "
              f"torch's speed, x{row['flax_over_transformers']:.2f} transformers'; first call "
              f"{row['flax_first_call_s']:.1f} s")
    return summary


if __name__ == "__main__":
    main()
