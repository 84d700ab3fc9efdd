"""The smallest run with validation, for the fault tests that need ``best/`` weights: a
character-level GPT of one layer on a few lines of text written into the test's folder
(no data set needed), validated every 2 steps."""

from pathlib import Path

import yaml

# Sixty short lines to learn, any would do: their characters fix the vocabulary.
TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog, {i * 7 % 10} times.\n" for i in range(60))


def language_model_recipe(folder: Path, steps: int = 8, keep_best: int = 2, **train) -> Path:
    """A recipe file in ``folder`` (beside its text): ``steps`` steps, a validation every 2,
    the ``keep_best`` best weights kept; ``train`` overrides more train fields."""
    text = folder / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    recipe = {
        "task": "language_model",
        "model": {"preset": "gpt-tiny", "n_layers": 1, "d_model": 32, "n_heads": 2, "d_ff": 64, "max_length": 32},
        "data": {"file": str(text), "tokenizer": "char", "eval_batches": 2, "sample_tokens": 0},
        "train": {"steps": steps, "batch_size": 4, "eval_every": 2, "keep_best": keep_best, "lr": 1e-3,
                  "schedule": "constant", "warmup_steps": 0, "threads": 1, "log_every": 1,
                  "dtype": "float32", **train},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path
