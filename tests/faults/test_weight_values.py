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


def _without(key):
    return lambda tensors: tensors.pop(key)


TENSOR_DAMAGE = [
    (_without("0.exp_avg"), "no 0.exp_avg (the state Adam keeps for each weight it updated: exp_avg, exp_avg_sq, "
                            "step)"),
    (_without("3.step"), "no 3.step (the state Adam keeps"),
    (lambda tensors: tensors.update({"0.max_exp_avg_sq": tensors["0.exp_avg_sq"].clone()}),
     "0.max_exp_avg_sq is no state Adam keeps (exp_avg, exp_avg_sq, step)"),
    (lambda tensors: tensors.update({"999.exp_avg": torch.zeros(2)}), "999.exp_avg names weight 999, the optimizer "
                                                                      "has 85"),
    (lambda tensors: tensors.update({"0.step": tensors["0.step"].reshape(1)}),
     "0.step has shape (1,), expected a single number"),
]


@pytest.mark.parametrize("change, what", TENSOR_DAMAGE, ids=[what[:24] for _, what in TENSOR_DAMAGE])
def test_each_weight_holds_the_tensors_a_step_of_its_optimizer_keeps(run, change, what):
    """Not a KeyError from inside torch once training has begun, nor a tensor torch ignores."""
    path = run / "state" / "optimizer.safetensors"
    edit_tensors(path, change)
    output = assert_one_line_error(resume(run), f"{path}: {what}", "; the state is damaged")
    assert "Traceback" not in output


# ------------------------------------------------------------------ trainer.json and optimizer.json


def rewrite_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def _numpy_state(index, value):
    return lambda saved: saved["numpy"].__setitem__(index, value)


def _word(generator, value):
    """One of the 624 words of Python's or numpy's random state replaced by ``value``."""
    return lambda saved: saved[generator][1].__setitem__(5, value)


TRAINER_DAMAGE = [
    (lambda saved: saved["trainer"].update(step="12"), 'trainer.step="12" should be an integer'),
    (lambda saved: saved["trainer"].update(step=-5), "trainer.step=-5 should be a count of steps from 0 to 2**53"),
    (lambda saved: saved["trainer"].update(step=10**30),
     f"trainer.step={10**30} should be a count of steps from 0 to 2**53"),
    (lambda saved: saved["trainer"].update(tokens=-1), "trainer.tokens=-1 should be 0 or more"),
    (lambda saved: saved["trainer"].update(seconds=float("nan")), "trainer.seconds=NaN should be a finite number"),
    (lambda saved: saved["trainer"].update(stop_reason="bored"),
     'trainer.stop_reason="bored" should be one of "", "steps", "time_budget", "early_stopping"'),
    (lambda saved: saved["trainer"].update(skipped_steps=[50]),
     "trainer.skipped_steps[0]=50 is not one of the state's steps (1 to 12)"),
    (lambda saved: saved["trainer"]["history"][0].__setitem__(2, -0.5),
     "trainer.history[0][2]=-0.5 should be a rate, 0 or more"),
    (_numpy_state(1, [1]), "numpy[1] should be 624 words of 32 bits"),
    (_word("numpy", 2**40), "numpy[1] should be 624 words of 32 bits"),
    (_numpy_state(0, "PCG64"), 'numpy[0]="PCG64" should be "MT19937"'),
    (_numpy_state(2, 9999), "numpy[2]=9999 should be a position from 0 to 624"),
    (_numpy_state(3, 2), "numpy[3]=2 should be 0 or 1"),
    (_word("python", -1), "python[1] should be 624 words of 32 bits and a position from 0 to 624"),
    (lambda saved: saved["python"].__setitem__(0, 7), "python[0]=7 should be 3"),
    (lambda saved: saved["trainer"].pop("step"), "no trainer.step"),
    (lambda saved: saved["trainer"].update(history=[[10, "low", 0.1]]),
     'trainer.history[0][1]="low" should be a number'),
    (lambda saved: saved["trainer"].update(best=[[1.5]]), "trainer.best[0] should be a list of 2 values"),
    (lambda saved: saved["trainer"].update(steps=12), "unknown field trainer.steps"),
    (lambda saved: saved.pop("numpy"), "no numpy"),
    (lambda saved: saved.update(python=[3, "state", None]), "python[1] should be a list"),
]


@pytest.mark.parametrize("change, what", TRAINER_DAMAGE, ids=[what[:40] for _, what in TRAINER_DAMAGE])
def test_a_trainer_json_field_that_is_wrong_is_named_with_the_file(run, change, what):
    """Of the right type or not: a count no run reaches, a random state its generator would
    refuse in a traceback (numpy's IndexError) or take without a word (a word past 32 bits)."""
    path = run / "state" / "trainer.json"
    rewrite_json(path, change)
    assert_one_line_error(resume(run), f"{path}: {what}", "; the state is damaged")


RNG_DAMAGE = [
    (lambda tensors: tensors.update(torch_rng=tensors["torch_rng"][:100].clone()),
     "torch_rng holds (100,) torch.uint8, torch's random state is (5056,) torch.uint8"),
    (lambda tensors: tensors.update(torch_rng=tensors["torch_rng"].float()),
     "torch_rng holds (5056,) torch.float32, torch's random state is (5056,) torch.uint8"),
    (lambda tensors: tensors.update(other=tensors.pop("torch_rng")), "no torch_rng"),
]


@pytest.mark.parametrize("change, what", RNG_DAMAGE, ids=["short", "float", "missing"])
def test_torch_s_random_state_is_named_with_its_file(run, change, what):
    path = run / "state" / "rng.safetensors"
    edit_tensors(path, change)
    assert_one_line_error(resume(run), f"{path}: {what}; the state is damaged")


def test_a_trainer_json_that_is_not_json_names_its_line(run):
    path = run / "state" / "trainer.json"
    path.write_text('{"trainer": {"step": 12,\n  "tokens": }\n')
    assert_one_line_error(resume(run), f"{path}, line 2:")


def _setting(name, value):
    return lambda saved: saved["param_groups"][0].update({name: value})


OPTIMIZER_DAMAGE = [
    (lambda saved: saved.pop("param_groups"), "no param_groups"),
    (lambda saved: saved.update(scalars=[]), "scalars should be a mapping"),
    (lambda saved: saved["param_groups"][0].update(params="all"), "param_groups[0] should be a mapping whose params"),
    (lambda saved: saved["param_groups"][0]["params"].reverse(),
     "param_groups[0].params should number the weights 0 to 84 in order"),
    (lambda saved: saved["param_groups"].append(saved["param_groups"][0]),
     "param_groups holds 2 groups, the recipe's optimizer 1"),
    (_setting("amsgrad", True), "param_groups[0].amsgrad=true, the recipe's optimizer has false"),
    (_setting("betas", [2, 3]), "param_groups[0].betas=[2, 3], the recipe's optimizer has [0.9, 0.98]"),
    (_setting("eps", None), "param_groups[0].eps=null should be a finite number"),
    (_setting("weight_decay", float("inf")), "param_groups[0].weight_decay=Infinity should be a finite number"),
    (_setting("lr", "abc"), 'param_groups[0].lr="abc" should be a finite number'),
    (_setting("lr", float("nan")), "param_groups[0].lr=NaN should be a finite number"),
    (_setting("lr", -1), "param_groups[0].lr=-1 should be 0 or more"),
    (_setting("fused", "yes"), 'param_groups[0].fused="yes" should be true, false or null'),
    (_setting("momentum", 0.9), "param_groups[0].momentum is no setting of Adam"),
    (lambda saved: saved["scalars"].update({"0.step": 3}),
     "scalars holds 0.step, which optimizer.safetensors holds too"),
]


@pytest.mark.parametrize("change, what", OPTIMIZER_DAMAGE, ids=[what[:40] for _, what in OPTIMIZER_DAMAGE])
def test_an_optimizer_json_field_that_is_wrong_is_named_with_the_file(run, change, what):
    """The recipe decides every setting but the rate (a resume cannot change them), so one
    that differs from the recipe's is damage, not a setting to train on: not a traceback
    from torch (eps null, amsgrad true), nor a run that trains on (betas [2, 3], a rate of
    "abc") and then stops as diverged, blaming the rate."""
    path = run / "state" / "optimizer.json"
    rewrite_json(path, change)
    output = assert_one_line_error(resume(run), f"{path}: {what}", "; the state is damaged")
    assert "diverged" not in output


def test_a_step_count_kept_as_a_number_rather_than_a_tensor_is_refused(run):
    edit_tensors(run / "state" / "optimizer.safetensors", _without("0.step"))
    path = run / "state" / "optimizer.json"
    rewrite_json(path, lambda saved: saved["scalars"].update({"0.step": 12}))
    assert_one_line_error(resume(run), f"{path}: 0.step should be a tensor in optimizer.safetensors; the state is "
                                       "damaged")


def test_a_setting_an_older_torch_did_not_write_takes_the_recipe_s_value(run):
    """torch adds settings to its optimizers now and then; a state saved before one was
    added resumes with the recipe's, which it would have held."""
    rewrite_json(run / "state" / "optimizer.json", lambda saved: saved["param_groups"][0].pop("maximize"))
    with pytest.warns(UserWarning, match="resuming with a changed recipe: train.steps 12 -> 13"):
        result = cli("train", "--resume", run, "--resume-changed", "--set", "train.steps=13", "--tracking", "none",
                     "--no-progress")
    assert result.exit_code == 0, result.output


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


def test_hugging_face_weights_that_do_not_fit_their_config_name_both_files(built, tmp_path):
    hf = shutil.copytree(built / "hf", tmp_path / "hf")
    edit_tensors(hf / "model.safetensors", lambda tensors: tensors.pop("transformer.ln_f.bias"))
    result = cli("generate", "--checkpoint", hf, "--prompt", "ab", "--max-new-tokens", "2")
    assert_one_line_error(result, f"{hf / 'model.safetensors'} does not fit {hf / 'config.json'}: ",
                          "transformer.ln_f.bias", max_lines=1)
