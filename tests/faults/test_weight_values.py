"""What a resumable state and a model folder hold, beyond being readable safetensors and
JSON: weights and optimizer moments that are finite and floating-point, of their weights'
shapes; ``trainer.json`` and ``optimizer.json`` as the trainer wrote them (each problem
named with its file and field); and a taa tokenizer that survives ``convert --to-hf`` then
``convert --from-hf``.

(Every command that loads weights refuses nan and inf in them: ``not_finite`` in
test_damaged_files.py.)
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from taa import api

from tests.checkpoints import language_model_run
from tests.faults.conftest import COPY, TINY, assert_one_line_error, cli
from tests.faults.language_model import language_model_recipe


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Once for the module: a trained copy run (with its state), a language-model run with a
    character tokenizer and its Hugging Face conversion (which keeps that tokenizer in
    ``tokenizer/``)."""
    root = tmp_path_factory.mktemp("values")
    result = cli("train", COPY, *TINY, "--out", root / "copy", "--tracking", "none", "--no-progress")
    assert result.exit_code == 0, result.output
    language_model_run(root / "lm")
    api.convert(to_hf=root / "lm", out=root / "hf")
    return root


@pytest.fixture
def run(built, tmp_path):
    """A copy of the trained copy run to damage."""
    shutil.copytree(built / "copy", tmp_path / "copy")
    return tmp_path / "copy"


def resume(folder: Path):
    return cli("train", "--resume", folder, "--tracking", "none", "--no-progress")


def edit_tensors(path: Path, change) -> None:
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


# ------------------------------------------------------------------ nan and inf in a state


@pytest.mark.parametrize("file, key", [("model.safetensors", "encoder.layers.0.self_attention.q_proj.weight"),
                                       ("optimizer.safetensors", "0.exp_avg_sq")])
@pytest.mark.parametrize("value", [float("nan"), float("-inf")], ids=["nan", "inf"])
def test_resuming_a_state_holding_nan_or_inf_names_the_file_not_a_divergence(run, file, key, value):
    """Not "training diverged ... the last good state is in state/": that state is the damaged one."""
    path = run / "state" / file

    def damage(tensors):
        assert key in tensors, sorted(tensors)
        tensors[key].view(-1)[0] = value

    edit_tensors(path, damage)
    output = assert_one_line_error(resume(run), f"{path}: tensor {key!r} holds 1 non-finite value (nan or inf)",
                                   "the file is damaged")
    assert "diverged" not in output and "last good state" not in output


def test_kept_best_weights_holding_nan_are_named_before_a_resumed_run_trains(tmp_path):
    """The run ends with its best weights: damaged ones are found when it resumes, not after
    the training it would then lose."""
    recipe = language_model_recipe(tmp_path, steps=4, keep_best=1)
    out = tmp_path / "run"
    result = cli("train", recipe, "--out", out, "--tracking", "none", "--no-progress")
    assert result.exit_code == 0, result.output
    (best,) = (out / "best").glob("step-*.safetensors")
    edit_tensors(best, lambda tensors: tensors["blocks.final_norm.weight"].fill_(float("nan")))
    state = (out / "state" / "trainer.json").read_bytes()
    longer = cli("train", "--resume", out, "--resume-changed", "--set", "train.steps=8", "--tracking", "none",
                 "--no-progress")
    assert_one_line_error(longer, f"{best}: tensor 'blocks.final_norm.weight' holds", "non-finite")
    assert (out / "state" / "trainer.json").read_bytes() == state  # no step was trained


# ------------------------------------------------------------------ the optimizer's tensors


def test_an_integer_step_count_is_refused(run):
    """Adam's and Muon's step counts are float32 tensors: an integer one is no file of theirs."""
    path = run / "state" / "optimizer.safetensors"
    edit_tensors(path, lambda tensors: tensors.update({"0.step": tensors["0.step"].to(torch.int64)}))
    assert_one_line_error(resume(run), str(path), "0.step I64 (expected floating point)")


def test_a_moment_of_another_shape_than_its_weight_is_refused(run):
    """torch would broadcast it into the update and the run would stop as diverged."""
    path = run / "state" / "optimizer.safetensors"
    edit_tensors(path, lambda tensors: tensors.update({"0.exp_avg": torch.zeros(7)}))
    output = assert_one_line_error(resume(run), f"{path}: 0.exp_avg has shape (7,), its weight (")
    assert "diverged" not in output


def test_a_tensor_that_names_no_parameter_is_refused(run):
    path = run / "state" / "optimizer.safetensors"
    edit_tensors(path, lambda tensors: tensors.update({"exp_avg": torch.zeros(3)}))
    assert_one_line_error(resume(run), f"{path}: 'exp_avg' names no optimizer state")


# ------------------------------------------------------------------ trainer.json and optimizer.json


def rewrite_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


TRAINER_DAMAGE = [
    (lambda saved: saved["trainer"].update(step="12"), 'trainer.step="12" should be an integer'),
    (lambda saved: saved["trainer"].pop("step"), "no trainer.step"),
    (lambda saved: saved["trainer"].update(history=[[10, "low", 0.1]]),
     'trainer.history[0][1]="low" should be a number'),
    (lambda saved: saved["trainer"].update(best=[[1.5]]), "trainer.best[0] should be a list of 2 values"),
    (lambda saved: saved["trainer"].update(steps=12), "unknown field trainer.steps"),
    (lambda saved: saved.pop("numpy"), "no numpy"),
    (lambda saved: saved.update(python=[3, "state", None]), "python[1] should be a list"),
]


@pytest.mark.parametrize("change, what", TRAINER_DAMAGE, ids=[what for _, what in TRAINER_DAMAGE])
def test_a_trainer_json_field_that_is_wrong_is_named_with_the_file(run, change, what):
    path = run / "state" / "trainer.json"
    rewrite_json(path, change)
    assert_one_line_error(resume(run), f"{path}: {what}")


def test_a_trainer_json_that_is_not_json_names_its_line(run):
    path = run / "state" / "trainer.json"
    path.write_text('{"trainer": {"step": 12,\n  "tokens": }\n')
    assert_one_line_error(resume(run), f"{path}, line 2:")


OPTIMIZER_DAMAGE = [
    (lambda saved: saved.pop("param_groups"), "no param_groups"),
    (lambda saved: saved.update(scalars=[]), "scalars should be a mapping"),
    (lambda saved: saved["param_groups"][0].update(params="all"), "param_groups[0] should be a mapping whose params"),
]


@pytest.mark.parametrize("change, what", OPTIMIZER_DAMAGE, ids=[what for _, what in OPTIMIZER_DAMAGE])
def test_an_optimizer_json_field_that_is_wrong_is_named_with_the_file(run, change, what):
    path = run / "state" / "optimizer.json"
    rewrite_json(path, change)
    assert_one_line_error(resume(run), f"{path}: {what}")


# ------------------------------------------------------------------ Hugging Face folders


def test_causal_mask_buffers_a_converter_drops_may_hold_minus_inf(built, tmp_path):
    """Old GPT-2 checkpoints carry attn.bias and attn.masked_bias: masks, not weights."""
    folder = tmp_path / "hf"
    shutil.copytree(built / "hf", folder)

    def add_masks(tensors):
        tensors["transformer.h.0.attn.bias"] = torch.full((1, 1, 4, 4), float("-inf")).triu(1)
        tensors["transformer.h.0.attn.masked_bias"] = torch.tensor(float("-inf"))

    edit_tensors(folder / "model.safetensors", add_masks)
    result = cli("generate", "--checkpoint", folder, "--prompt-ids", "1 2", "--max-new-tokens", "2")
    assert result.exit_code == 0, result.output


def test_a_taa_tokenizer_survives_to_hf_then_from_hf(built, tmp_path):
    """--to-hf keeps a character tokenizer in tokenizer/ (transformers has none like it);
    --from-hf carries it on, so the converted model still reads and writes text."""
    result = cli("convert", "--from-hf", built / "hf", "--out", tmp_path / "model")
    assert result.exit_code == 0, result.output
    assert "tokenizer: tokenizer/" in result.output
    assert (tmp_path / "model" / "tokenizer" / "char_tokenizer.json").is_file()
    result = cli("generate", "--checkpoint", tmp_path / "model", "--prompt", "to be", "--max-new-tokens", "3",
                 "--seed", "0")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("to be")
    result = cli("convert", "--to-hf", tmp_path / "model", "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again" / "tokenizer" / "char_tokenizer.json").is_file()


def test_a_damaged_kept_tokenizer_stops_from_hf_before_it_writes(built, tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(built / "hf", folder)
    (folder / "tokenizer" / "char_tokenizer.json").write_text("[1, 2]")
    assert_one_line_error(cli("convert", "--from-hf", folder, "--out", tmp_path / "model"),
                          str(folder / "tokenizer" / "char_tokenizer.json"))
    assert not (tmp_path / "model").exists()
