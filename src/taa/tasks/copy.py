"""The synthetic copy task of the Annotated Transformer (Rush 2018, "A First Example").

Random sequences of symbols; the target is the source itself. Every sequence starts
with symbol 1, which is also the decoder's start token; 0 pads. A model that has
learned attention copies them exactly; we score exact-match greedy decoding on
held-out sequences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from taa.config import CopyTaskConfig, RecipeConfig
from taa.torch.generate import greedy_decode
from taa.torch.models.transformer import Transformer
from taa.torch.training import Seq2SeqBatch, Trainer, save_checkpoint, seed_everything, seq2seq_loss
from taa.tracking import Tracker

FIRST_SYMBOL = 2  # 0 pads, 1 starts every sequence


def random_sequences(n: int, length: int, vocab_size: int, start_id: int, generator: torch.Generator) -> Tensor:
    """(n, length) sequences: ``start_id`` then symbols drawn from 2..vocab_size-1."""
    data = torch.randint(FIRST_SYMBOL, vocab_size, (n, length), generator=generator)
    data[:, 0] = start_id
    return data


class CopyBatches:
    """An endless, resumable stream of copy batches: the decoder reads x[:-1] and predicts x[1:]."""

    def __init__(self, task: CopyTaskConfig, vocab_size: int, batch_size: int, start_id: int, seed: int) -> None:
        self.task, self.vocab_size, self.batch_size, self.start_id = task, vocab_size, batch_size, start_id
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> CopyBatches:
        return self

    def __next__(self) -> Seq2SeqBatch:
        data = random_sequences(self.batch_size, self.task.length, self.vocab_size, self.start_id, self.generator)
        return Seq2SeqBatch(source=data, target_input=data[:, :-1], target_output=data[:, 1:])

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state().tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))


@torch.no_grad()
def exact_match(model: Transformer, sources: Tensor) -> float:
    """Fraction of sequences that greedy decoding reproduces exactly."""
    model.eval()
    length = sources.shape[1]
    # The copy task has no end token: decode exactly `length` tokens (-1 never matches).
    decoded = greedy_decode(model, sources, max_length=length, start_id=sources[0, 0].item(), end_id=-1)
    return (decoded == sources).all(dim=1).float().mean().item()


def run(
    recipe: RecipeConfig,
    out: Optional[str | Path] = None,
    progress: bool = True,
    resume: Optional[str | Path] = None,
    tracker: Optional[Tracker] = None,
) -> dict[str, Any]:
    """Train on the copy task, score exact match on held-out sequences, save a checkpoint."""
    task, model_config, train = recipe.data, recipe.model, recipe.train
    tracker = tracker or Tracker()
    tracker.log_params(recipe)
    seed_everything(train.seed)
    model = Transformer(model_config)
    held_out = random_sequences(
        task.eval_sequences, task.length, model_config.source_vocab_size, model_config.bos_id,
        torch.Generator().manual_seed(train.seed + 1),
    )
    batches = CopyBatches(task, model_config.source_vocab_size, train.batch_size, model_config.bos_id, train.seed)
    trainer = Trainer(
        model, train, seq2seq_loss(train.label_smoothing, model_config.pad_id), batches,
        d_model=model_config.d_model, out=out, progress=progress, tracker=tracker,
    )
    if resume is not None:
        trainer.load_state(Path(resume))
    result = trainer.fit()
    metrics = {
        "exact_match": exact_match(model, held_out),
        "final_loss": result.final_loss,
        "steps": result.steps,
        "seconds": result.seconds,
        "tokens_per_second": result.tokens_per_second,
        "parameters": model.num_parameters(),
    }
    tracker.log_metrics({"exact_match": metrics["exact_match"]}, result.steps)
    if out is not None:
        save_checkpoint(out, model, recipe, metrics)
        tracker.log_artifact(out / "recipe.yaml")
        tracker.log_artifact(out / "model.safetensors")
    return {"model": model, "metrics": metrics, "result": result}
