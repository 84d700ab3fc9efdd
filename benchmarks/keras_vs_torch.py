"""The Keras port against taa.torch, side by side in one process: a training step and greedy generation.

What it measures
    * the character GPT's training step, as each trainer runs it: forward, label-smoothed
      next-token cross-entropy, backward, gradient clipping, the non-finite check and the
      optimizer's update (the char recipe's Muon + AdamW, decay 0.3, by default). taa.torch
      runs ``Trainer._step``; Keras runs the compiled step of
      :class:`taa.keras.training.step.TrainingModel` (``train_on_batch``; XLA ``jit_compile``
      on the TensorFlow backend unless ``--no-jit``). The shape is nanoGPT's CPU recipe for
      Tiny Shakespeare: 4 layers, 4 heads, 128 wide, context 64, batch 12, 65 tokens, no dropout;
    * greedy generation of ``--new-tokens`` (128) tokens after a 16-token prompt, batch 1,
      with nanoGPT's shakespeare_char model (6 layers, 6 heads, 384 wide, 256 positions):
      :func:`taa.torch.generate.generate` against :func:`taa.keras.generate.generate`.

    Printed: the median ms of each side and the ratio Keras speed / torch speed (median
    torch time / median Keras time: above 1, Keras is faster).

Why the comparison is fair
    * same weights: the torch model's are loaded into the Keras one
      (:func:`taa.keras.weights.load_state_dict`); before any timing both compute the loss
      of the same batch (equal within 1e-4 in float32) and train three steps on the same
      batches, after which their losses must still agree (1e-3: Keras's Adam epsilon
      enters before the bias correction, torch's after); both generate from the same
      prompt (whether the tokens agree is printed);
    * same batches, same recipe settings (one ``TrainConfig``), same dtype (``--dtype
      bfloat16``: torch's autocast, Keras's ``mixed_bfloat16`` policy), the same threads
      (``--threads``, default 2: torch's, and TensorFlow's when it has not started yet);
    * steps and generations are interleaved (torch, Keras, Keras, torch, ...) after
      warm-up (Keras compiles then: once per shape); figures are medians.

Run it (from the repository root; TensorFlow's import takes ~10 s)::

    python benchmarks/keras_vs_torch.py                       # float32, a few minutes idle
    python benchmarks/keras_vs_torch.py --dtype bfloat16
    python benchmarks/keras_vs_torch.py --no-jit              # TensorFlow without XLA
    python benchmarks/keras_vs_torch.py --quick               # a smoke run
    KERAS_BACKEND=jax python benchmarks/keras_vs_torch.py     # JAX (always compiled)
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
from pathlib import Path

import numpy as np
import torch

if importlib.util.find_spec("taa") is None:  # running from a checkout without an install: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from taa.config import GPTConfig, RecipeConfig
from taa.tasks.language_model import LanguageModelBatch, language_model_loss
from taa.torch.generate import generate as torch_generate
from taa.torch.models.gpt import GPT as TorchGPT
from taa.torch.training import Trainer as TorchTrainer

CHAR_RECIPE = Path(__file__).resolve().parents[1] / "src" / "taa" / "recipes" / "gpt-shakespeare-char.yaml"


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2,
                        help="torch's threads, and TensorFlow's if it has not started")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--jit", action=argparse.BooleanOptionalAction, default=True,
                        help="compile Keras's step with XLA (TensorFlow; JAX always compiles)")
    parser.add_argument("--optimizer", choices=["muon", "adam"], default="muon", help="muon: the char recipe's")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per side (interleaved)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--gen-layers", type=int, default=6)
    parser.add_argument("--gen-heads", type=int, default=6)
    parser.add_argument("--gen-width", type=int, default=384)
    parser.add_argument("--gen-context", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="timed generations per side (interleaved)")
    parser.add_argument("--skip", choices=["train", "generate"], action="append", default=[],
                        help="leave out a part (may repeat)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 steps, 1 round, 16 new tokens")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.rounds, args.new_tokens = 3, 1, 1, 16
    return args


def set_threads(threads: int) -> str:
    """torch's threads, and TensorFlow's while it has not started (then they are fixed)."""
    torch.set_num_threads(threads)
    import keras

    if keras.backend.backend() != "tensorflow":
        return "torch only (the JAX backend picks its own)"
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already runs (a test process): its threads stay
        return "torch only (TensorFlow had started)"
    return "torch and TensorFlow"


def gpt_config(args, layers: int, heads: int, width: int, context: int) -> GPTConfig:
    recipe = RecipeConfig.load(CHAR_RECIPE)
    return dataclasses.replace(recipe.model, n_layers=layers, n_heads=heads, d_model=width, d_ff=4 * width,
                               max_length=context, vocab_size=args.vocab, dropout=0.0, attention_dropout=0.0)


def keras_twin(torch_model: torch.nn.Module, config: GPTConfig):
    """The Keras GPT with the torch model's weights (made under the current dtype policy)."""
    from taa.keras.models.gpt import GPT as KerasGPT
    from taa.keras.weights import ensure_built, load_state_dict

    model = ensure_built(KerasGPT(config))
    load_state_dict(model, {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}, "the torch GPT")
    return model


class Feeder:
    """The torch trainer's batch stream: the batch each step is handed, one at a time."""

    def __init__(self) -> None:
        self.batch = None

    def __next__(self) -> LanguageModelBatch:
        return self.batch


def windows(args, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, args.vocab, (args.batch, args.context + 1)) for _ in range(count)]


def train_steps(args) -> dict:
    """Build both trainers on the same weights, check they agree, time their steps interleaved."""
    from taa.keras.training import label_smoothed_cross_entropy, make_optimizer
    from taa.keras.training.step import TrainingModel, batch_fields
    from taa.training.schedules import schedule_from_config

    recipe = RecipeConfig.load(CHAR_RECIPE)
    train = dataclasses.replace(recipe.train, dtype=args.dtype, optimizer=args.optimizer, max_minutes=0.0,
                                steps=args.warmup + args.steps + 10)
    config = gpt_config(args, args.layers, args.heads, args.width, args.context)
    torch.manual_seed(args.seed)
    torch_model = TorchGPT(config).train()
    keras_model = keras_twin(torch_model, config)

    feeder = Feeder()
    torch_trainer = TorchTrainer(torch_model, train, language_model_loss(train.label_smoothing), feeder,
                                 d_model=config.d_model, progress=False)
    keras_loss = language_model_loss(train.label_smoothing, label_smoothed_cross_entropy)
    table = [schedule_from_config(train, config.d_model)(step) for step in range(train.steps + 1)]
    keras_step = TrainingModel(keras_model, keras_loss, LanguageModelBatch, train, table, jit_compile=args.jit)
    optimizer = make_optimizer(keras_model, train)
    keras_step.compile(optimizer=optimizer, jit_compile=args.jit)
    optimizer.build(keras_step.trainable_variables)

    def torch_step(window: np.ndarray) -> None:
        tokens = torch.from_numpy(window)
        feeder.batch = LanguageModelBatch(tokens[:, :-1], tokens[:, 1:])
        torch_trainer._step()
        torch_trainer.state.step += 1

    def keras_train(window: np.ndarray) -> None:
        keras_step.train_on_batch(batch_fields(LanguageModelBatch(window[:, :-1], window[:, 1:]))[1])

    def losses(window: np.ndarray) -> dict[str, float]:
        batch = LanguageModelBatch(window[:, :-1], window[:, 1:])
        torch_model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
            total, count = language_model_loss()(torch_model, LanguageModelBatch(*map(torch.from_numpy, (
                window[:, :-1], window[:, 1:]))))
        torch_model.train()
        keras_total, keras_count = keras_step.loss_of(batch)
        return {"torch": float(total) / int(count), "keras": keras_total / keras_count}

    tolerance = 1e-4 if args.dtype == "float32" else 2e-2
    check = windows(args, 4, args.seed + 1)
    before = losses(check[0])
    if abs(before["torch"] - before["keras"]) > tolerance:
        raise SystemExit(f"losses differ before training: {before}")
    for window in check[:3]:
        torch_step(window)
        keras_train(window)
    after = losses(check[3])
    if abs(after["torch"] - after["keras"]) > 10 * tolerance:
        raise SystemExit(f"losses differ after 3 identical steps: {after}")

    times: dict[str, list[float]] = {"torch": [], "keras": []}
    sides = {"torch": torch_step, "keras": keras_train}
    for index, window in enumerate(windows(args, args.warmup + args.steps, args.seed + 2)):
        for side in ("torch", "keras") if index % 2 == 0 else ("keras", "torch"):
            start = time.perf_counter()
            sides[side](window)
            if index >= args.warmup:
                times[side].append(time.perf_counter() - start)
    medians = {side: 1000 * statistics.median(values) for side, values in times.items()}
    return {"ms_per_step": medians, "ratio": medians["torch"] / medians["keras"], "loss_before": before,
            "loss_after_3_steps": after,
            "shape": {k: getattr(args, k) for k in ("layers", "heads", "width", "context", "batch", "vocab")}}


def generation(args) -> dict:
    """Greedy generation on the same weights, interleaved rounds."""
    from taa.keras.generate import generate as keras_generate

    config = gpt_config(args, args.gen_layers, args.gen_heads, args.gen_width, args.gen_context)
    torch.manual_seed(args.seed)
    torch_model = TorchGPT(config).eval()
    keras_model = keras_twin(torch_model, config)
    prompt = np.random.default_rng(args.seed + 3).integers(0, args.vocab, (1, args.prompt_tokens))

    def run_torch() -> np.ndarray:
        with torch.inference_mode():
            return torch_generate(torch_model, torch.from_numpy(prompt), max_new_tokens=args.new_tokens).numpy()

    def run_keras() -> np.ndarray:
        return np.asarray(keras_generate(keras_model, prompt.astype(np.int32), max_new_tokens=args.new_tokens))

    sides = {"torch": run_torch, "keras": run_keras}
    tokens = {side: run() for side, run in sides.items()}  # warm-up (Keras compiles) and the tokens
    times: dict[str, list[float]] = {"torch": [], "keras": []}
    for index in range(args.rounds):
        for side in ("torch", "keras") if index % 2 == 0 else ("keras", "torch"):
            start = time.perf_counter()
            sides[side]()
            times[side].append(time.perf_counter() - start)
    medians = {side: 1000 * statistics.median(values) for side, values in times.items()}
    same = tokens["torch"].shape == tokens["keras"].shape and bool((tokens["torch"] == tokens["keras"]).all())
    return {"ms_per_generation": medians, "ratio": medians["torch"] / medians["keras"], "same_tokens": same,
            "shape": {"layers": args.gen_layers, "heads": args.gen_heads, "width": args.gen_width,
                      "context": args.gen_context, "prompt": args.prompt_tokens, "new_tokens": args.new_tokens}}


def main(argv=None) -> dict:
    args = parse(argv)
    threads = set_threads(args.threads)
    import keras

    from taa.keras.training.distributed import MIXED_BFLOAT16

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_BFLOAT16 if args.dtype == "bfloat16" else "float32")
    try:
        summary = {"benchmark": "keras_vs_torch", "backend": keras.backend.backend(), "dtype": args.dtype,
                   "jit_compile": args.jit, "threads": args.threads, "threads_set_for": threads,
                   "optimizer": args.optimizer, "quick": args.quick, "keras": keras.__version__,
                   "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
        if "train" not in args.skip:
            summary["train_step"] = train_steps(args)
        if "generate" not in args.skip:
            keras.config.set_dtype_policy("float32")  # generation compares float32 models
            summary["generate"] = generation(args)
    finally:
        keras.config.set_dtype_policy(previous)
    if args.json:
        print(json.dumps(summary))
        return summary
    where = f"{summary['backend']}{', XLA' if args.jit and summary['backend'] == 'tensorflow' else ''}"
    if "train_step" in summary:
        step = summary["train_step"]
        print(f"training step ({args.dtype}, {args.optimizer}, {args.threads} threads for {threads}): "
              f"torch {step['ms_per_step']['torch']:.2f} ms, keras ({where}) {step['ms_per_step']['keras']:.2f} ms; "
              f"keras x{step['ratio']:.2f} torch's speed")
    if "generate" in summary:
        gen = summary["generate"]
        print(f"greedy generation of {args.new_tokens} tokens (float32): torch {gen['ms_per_generation']['torch']:.1f} "
              f"ms, keras ({summary['backend']}) {gen['ms_per_generation']['keras']:.1f} ms; keras x{gen['ratio']:.2f} "
              f"torch's speed; same tokens: {'yes' if gen['same_tokens'] else 'no'}")
    return summary


if __name__ == "__main__":
    main()
