import pytest
import torch

from taa import folders
from taa.config import RecipeConfig, preset
from taa.folders import CheckpointError
from taa.torch import Transformer
from taa.torch.training import checkpoint as ckpt


def _recipe():
    return RecipeConfig.from_dict({"model": {"preset": "vaswani-tiny"}, "train": {"steps": 3}})


def _assert_same_weights(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_round_trip_keeps_tied_weights(tmp_path):
    torch.manual_seed(0)
    recipe = _recipe()
    model = Transformer(recipe.model)
    ckpt.save_checkpoint(tmp_path / "run", model, recipe, {"loss": 1.5})
    assert (tmp_path / "run" / "model.safetensors").is_file()
    loaded_recipe = folders.load_recipe(tmp_path / "run")
    assert loaded_recipe == recipe
    again = ckpt.load_weights(tmp_path / "run", Transformer(loaded_recipe.model))
    _assert_same_weights(model, again)
    assert again.output_projection.weight is again.source_embedding.weight


def test_a_failed_folder_write_leaves_the_previous_one(tmp_path):
    torch.manual_seed(0)
    first = Transformer(_recipe().model)
    folders.write_folder_atomically(tmp_path / "state", lambda d: ckpt.save_weights(first, d / "model.safetensors"))
    before = (tmp_path / "state" / "model.safetensors").read_bytes()

    def killed(staging):
        ckpt.save_weights(Transformer(_recipe().model), staging / "model.safetensors")
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        folders.write_folder_atomically(tmp_path / "state", killed)
    assert (tmp_path / "state" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]  # no staging folder left behind


def test_a_kill_between_the_swap_renames_is_recoverable(tmp_path):
    (tmp_path / "state.old").mkdir()
    (tmp_path / "state.old" / "trainer.json").write_text("{}")
    assert folders.find_state_folder(tmp_path) == tmp_path / "state.old"
    (tmp_path / "state.new").mkdir()
    (tmp_path / "state.new" / "trainer.json").write_text("{}")
    assert folders.find_state_folder(tmp_path) == tmp_path / "state.new"
    with pytest.raises(CheckpointError, match="no resumable training state"):
        folders.find_state_folder(tmp_path / "elsewhere")


def test_a_failed_file_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "w.safetensors"
    ckpt.save_tensors({"x": torch.ones(3)}, path)

    def broken(tmp):
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        folders.write_file_atomically(path, broken)
    torch.testing.assert_close(ckpt.load_tensors(path)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_average_is_the_elementwise_mean(tmp_path):
    torch.manual_seed(0)
    models = [Transformer(_recipe().model) for _ in range(3)]
    paths = []
    for i, model in enumerate(models):
        paths.append(tmp_path / f"{i}.safetensors")
        ckpt.save_weights(model, paths[-1])
    averaged = ckpt.load_average(Transformer(_recipe().model), paths)
    expected = sum(m.encoder.layers[0].feed_forward.w1.weight for m in models) / 3
    torch.testing.assert_close(averaged.encoder.layers[0].feed_forward.w1.weight, expected, atol=1e-6, rtol=0)
    assert averaged.output_projection.weight is averaged.source_embedding.weight


def test_loading_a_mismatched_model_fails_with_one_line(tmp_path):
    recipe = _recipe()
    ckpt.save_checkpoint(tmp_path / "run", Transformer(recipe.model), recipe)
    with pytest.raises(CheckpointError, match=r"weights do not fit Transformer: mis-shaped: "
                       r"decoder.layers.0.feed_forward.w1.bias \(64,\) != expected \(96,\)"):
        ckpt.load_weights(tmp_path / "run", Transformer(preset("vaswani-tiny", d_ff=96)))
    with pytest.raises(CheckpointError, match="not a taa checkpoint"):
        folders.load_recipe(tmp_path)


def test_optimizer_state_round_trips(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.9, 0.98), eps=1e-9)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    ckpt.save_optimizer(optimizer, tmp_path)
    again = torch.optim.Adam(model.parameters(), lr=0.5, betas=(0.9, 0.98), eps=1e-9)  # the recipe's, but the rate
    ckpt.load_optimizer(again, tmp_path)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        torch.testing.assert_close(again.state[model.weight][key], optimizer.state[model.weight][key], rtol=0, atol=0)
    assert again.param_groups[0]["lr"] == 0.1 and again.param_groups[0]["betas"] == (0.9, 0.98)
