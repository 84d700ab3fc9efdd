import pytest
import torch

from taa.config import RecipeConfig, preset
from taa.torch import Transformer
from taa.torch.training import checkpoint as ckpt


def _recipe():
    return RecipeConfig.from_dict({"model": {"preset": "vaswani-tiny"}, "train": {"steps": 3}})


def test_round_trip_keeps_tied_weights(tmp_path):
    torch.manual_seed(0)
    recipe = _recipe()
    model = Transformer(recipe.model)
    ckpt.save_checkpoint(tmp_path / "run", model, recipe, {"loss": 1.5})
    assert (tmp_path / "run" / "model.safetensors").is_file()
    loaded_recipe = ckpt.load_recipe(tmp_path / "run")
    assert loaded_recipe == recipe
    again = ckpt.load_weights(tmp_path / "run", Transformer(loaded_recipe.model))
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert again.output_projection.weight is again.source_embedding.weight


def test_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    recipe = _recipe()
    torch.manual_seed(0)
    first = Transformer(recipe.model)
    ckpt.save_checkpoint(tmp_path / "run", first, recipe)
    before = (tmp_path / "run" / "model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt.cfg, "save", crash)  # weights are written, then the recipe write dies
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path / "run", Transformer(recipe.model), recipe)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left behind


def test_loading_a_mismatched_model_fails(tmp_path):
    recipe = _recipe()
    ckpt.save_checkpoint(tmp_path / "run", Transformer(recipe.model), recipe)
    with pytest.raises(RuntimeError):
        ckpt.load_weights(tmp_path / "run", Transformer(preset("vaswani-tiny", d_ff=96)))
    with pytest.raises(ValueError, match="not a taa checkpoint"):
        ckpt.load_recipe(tmp_path)
