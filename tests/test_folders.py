"""taa.folders: the run and model folder layout, atomic writes, and one-line errors. No framework."""

import os
import stat

import pytest
import yaml

from taa import config as cfg
from taa import folders
from taa.folders import CheckpointError


def test_folder_kinds_are_told_apart_by_one_file(tmp_path):
    run, model, hf, sentence = (tmp_path / name for name in ("run", "model", "hf", "sentence"))
    for folder, name in ((run, folders.RECIPE), (model, folders.MODEL_FILE), (hf, folders.HF_CONFIG),
                         (sentence, folders.SENTENCE_TRANSFORMERS_MODULES)):
        folder.mkdir()
        (folder / name).write_text("{}")
    assert [folders.folder_kind(f) for f in (run, model, hf, sentence)] == [
        folders.TAA_RUN, folders.TAA_MODEL, folders.HUGGING_FACE, folders.HUGGING_FACE]


def test_anything_else_is_one_line_naming_the_folder(tmp_path):
    with pytest.raises(CheckpointError, match="missing: no such folder"):
        folders.folder_kind(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a folder"):
        folders.folder_kind(tmp_path / "file.txt")
    with pytest.raises(CheckpointError, match=r"neither a taa checkpoint \(recipe.yaml or model.yaml\) nor"):
        folders.folder_kind(tmp_path)
    assert issubclass(CheckpointError, cfg.ConfigError)  # every command prints it as one line


def test_pickled_weights_are_refused_never_read(tmp_path):
    with pytest.raises(CheckpointError, match="model.safetensors: no such file"):
        folders.weights_file(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    (tmp_path / "model.pt").write_bytes(b"not unpickled")
    with pytest.raises(CheckpointError, match=r"only pickled weights \(model.pt, pytorch_model.bin\); "
                                              r"taa reads safetensors only \(model.safetensors\)"):
        folders.weights_file(tmp_path)
    (tmp_path / folders.WEIGHTS).write_bytes(b"")
    assert folders.weights_file(tmp_path) == tmp_path / "model.safetensors"


def test_weight_mismatches_name_every_key():
    expected = {"a": (2, 3), "b": (4,), "c": None}
    assert folders.weight_mismatches({"a": [2, 3], "b": [4], "c": [7]}, expected) == []
    assert folders.weight_mismatches({"a": [3, 2], "c": [1], "z": [1]}, expected) == [
        "missing keys: b", "unexpected keys: z", "mis-shaped: a (3, 2) != expected (2, 3)"]


def test_recipe_and_model_description_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="not a taa checkpoint"):
        folders.load_recipe(tmp_path)
    (tmp_path / folders.RECIPE).write_text("task: poetry\n")
    with pytest.raises(CheckpointError, match=r"recipe.yaml: .*task='poetry'"):
        folders.load_recipe(tmp_path)
    recipe = cfg.RecipeConfig.from_dict({"task": "language_model", "model": {"preset": "gpt-tiny"}})
    (tmp_path / folders.RECIPE).write_text(cfg.dumps(recipe, "yaml"))
    assert folders.load_recipe(tmp_path) == recipe

    model = cfg.model_config_to_dict(cfg.preset("bert-tiny"))
    description = {"format": folders.MODEL_FORMAT, "architecture": "BertModel", "pooler": False, "model": model}
    (tmp_path / folders.MODEL_FILE).write_text(yaml.safe_dump(description))
    config, architecture, options = folders.load_model_description(tmp_path)
    assert config == cfg.preset("bert-tiny") and architecture == "BertModel" and options == {"pooler": False}
    (tmp_path / folders.MODEL_FILE).write_text(yaml.safe_dump({**description, "format": "taa.model/0"}))
    with pytest.raises(CheckpointError, match=r"model.yaml: format='taa.model/0', expected 'taa.model/1'"):
        folders.load_model_description(tmp_path)


def test_sentence_transformers_module_folder_is_found(tmp_path):
    (tmp_path / folders.SENTENCE_TRANSFORMERS_MODULES).write_text(
        '[{"idx": 0, "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},'
        ' {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]')
    (tmp_path / "0_Transformer").mkdir()
    (tmp_path / "1_Pooling").mkdir()
    assert folders.hugging_face_folders(tmp_path) == [tmp_path, tmp_path / "0_Transformer"]


def test_a_failed_file_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    folders.write_file_atomically(path, lambda tmp: tmp.write_text("old"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()  # an ordinary file, not mkstemp's 0600

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        folders.write_file_atomically(path, broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_kill_during_a_folder_write_keeps_a_whole_folder(tmp_path):
    state = tmp_path / folders.STATE
    folders.write_folder_atomically(state, lambda d: (d / folders.TRAINER_STATE).write_text("1"))

    def killed(staging):
        (staging / folders.TRAINER_STATE).write_text("2")
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        folders.write_folder_atomically(state, killed)
    assert (state / folders.TRAINER_STATE).read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["state"]
    folders.write_folder_atomically(state, lambda d: (d / folders.TRAINER_STATE).write_text("3"))
    assert folders.find_state_folder(tmp_path) == state and (state / folders.TRAINER_STATE).read_text() == "3"
    state.rename(tmp_path / "state.old")  # a kill between the two renames of the swap
    assert folders.find_state_folder(tmp_path) == tmp_path / "state.old"
    with pytest.raises(CheckpointError, match=r"no resumable training state \(state/trainer.json\)"):
        folders.find_state_folder(tmp_path / "elsewhere")


def test_a_file_gets_the_umask_mode_even_when_the_writer_replaces_it_with_a_0600_one(tmp_path):
    """safetensors writes its own temporary file (0600) and renames it over the path it is given."""

    def replacing(tmp):
        private = tmp.with_name("private")
        private.write_text("weights")
        os.chmod(private, 0o600)
        os.replace(private, tmp)

    folders.write_file_atomically(tmp_path / "model.safetensors", replacing)
    assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) == 0o666 & ~_umask()


def test_cleaning_a_run_folder_removes_what_a_kill_left_and_keeps_the_state(tmp_path):
    best = tmp_path / folders.BEST
    best.mkdir()
    for name in ("step-2.safetensors", "step-4.safetensors", "notes.txt", ".tmpAbC123", ".step-6.safetensors.tmp-x_1"):
        (best / name).write_text("x")
    for name in (".model.safetensors.tmp-k3j_x9ab", ".tmp0q2W8e", "metrics.json", ".hidden"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".state.tmp-0q2w8e4r").mkdir()
    for name, step in (("state.new", "2"), ("state.old", "1")):  # a kill between the two renames of a swap
        (tmp_path / name).mkdir()
        (tmp_path / name / folders.TRAINER_STATE).write_text(step)

    folders.clean_run_folder(tmp_path)  # a new run: best/ is not its to judge
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "best", "metrics.json", "state"]
    assert (tmp_path / folders.STATE / folders.TRAINER_STATE).read_text() == "2"  # the newer half, as found
    assert sorted(p.name for p in best.iterdir()) == ["notes.txt", "step-2.safetensors", "step-4.safetensors"]
    folders.clean_run_folder(tmp_path, best_steps=[4])  # a resumed run whose state lists step 4 only
    assert sorted(p.name for p in best.iterdir()) == ["notes.txt", "step-4.safetensors"]


def test_best_weights_live_in_best(tmp_path):
    assert folders.best_weights(tmp_path, 250) == tmp_path / "best" / "step-250.safetensors"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
