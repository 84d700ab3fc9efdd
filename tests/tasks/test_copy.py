"""The Annotated Transformer's copy task, trained for real with the shipped recipe."""

from pathlib import Path

import pytest
import torch

from taa.config import RecipeConfig
from taa.tasks.copy import CopyBatches, exact_match, random_sequences, run

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "copy.yaml"


def test_batches_shift_the_target_by_one():
    recipe = RecipeConfig.load(RECIPE)
    batch = next(CopyBatches(recipe.data, 11, 4, 1, seed=0))
    assert batch.source.shape == (4, 10)
    assert torch.equal(batch.target_input, batch.source[:, :-1])
    assert torch.equal(batch.target_output, batch.source[:, 1:])
    assert (batch.source[:, 0] == 1).all() and (batch.source[:, 1:] >= 2).all() and (batch.source < 11).all()


@pytest.mark.slow
def test_shipped_recipe_copies_every_held_out_sequence(tmp_path):
    recipe = RecipeConfig.load(RECIPE)
    assert recipe.model.n_encoder_layers == recipe.model.n_decoder_layers == 2
    assert recipe.model.source_vocab_size == 11
    outcome = run(recipe, out=tmp_path / "copy", progress=False)
    assert outcome["metrics"]["exact_match"] == 1.0
    # and on sequences it has never seen, drawn with another seed
    fresh = random_sequences(100, 10, 11, 1, torch.Generator().manual_seed(1234))
    assert exact_match(outcome["model"], fresh) == 1.0
