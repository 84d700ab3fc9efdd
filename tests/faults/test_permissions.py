"""Every file and folder a run writes has the mode the user's umask gives a new one:
``0666 & ~umask`` for files (the weights, the optimizer state, best/, the JSON and YAML),
``0777 & ~umask`` for folders; not 0600 for the weights, as mkstemp and safetensors make
their files."""

import os
import stat

import pytest

from tests.faults.conftest import cli
from tests.faults.language_model import language_model_recipe


@pytest.fixture
def umask(request):
    """The process's umask set to the parameter for the test, then put back."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


@pytest.mark.parametrize("umask", [0o022, 0o077], indirect=True, ids=["022", "077"])
def test_a_run_folder_follows_the_umask(tmp_path, umask):
    recipe = language_model_recipe(tmp_path, steps=4)
    out = tmp_path / "run"
    result = cli("train", recipe, "--out", out, "--tracking", "none", "--no-progress")
    assert result.exit_code == 0, result.output
    written = [out, *out.rglob("*")]
    kinds = {path.relative_to(out).parts[0] if path != out else "." for path in written}
    assert {"model.safetensors", "state", "best", "tokenizer", "metrics.json", "recipe.yaml"} <= kinds, kinds
    assert {p.name for p in (out / "state").iterdir()} >= {"model.safetensors", "optimizer.safetensors",
                                                           "rng.safetensors", "trainer.json", "optimizer.json"}
    modes = {str(path.relative_to(out)): oct(stat.S_IMODE(path.stat().st_mode)) for path in written}
    expected = {name: oct((0o777 if (out / name).is_dir() else 0o666) & ~umask) for name in modes}
    assert modes == expected


@pytest.mark.parametrize("umask", [0o002], indirect=True, ids=["002"])
def test_converted_weights_follow_the_umask(tmp_path, umask):
    recipe = language_model_recipe(tmp_path, steps=2)
    run = tmp_path / "run"
    assert cli("train", recipe, "--out", run, "--tracking", "none", "--no-progress").exit_code == 0
    out = tmp_path / "hf"
    result = cli("convert", "--to-hf", run, "--out", out)
    assert result.exit_code == 0, result.output
    assert oct(stat.S_IMODE((out / "model.safetensors").stat().st_mode)) == oct(0o666 & ~umask)


@pytest.mark.parametrize("umask", [0o077], indirect=True, ids=["077"])
def test_a_converted_folder_and_its_tokenizer_follow_the_umask_both_ways(tmp_path, umask):
    """The run's tokenizer was written under umask 022 (0755, 0644): its copy in the converted
    folder, and back, has the modes of the umask at conversion, as every other file there."""
    os.umask(0o022)
    recipe = language_model_recipe(tmp_path, steps=2)
    run = tmp_path / "run"
    assert cli("train", recipe, "--out", run, "--tracking", "none", "--no-progress").exit_code == 0
    os.umask(umask)
    for source, out, option in [(run, tmp_path / "hf", "--to-hf"), (tmp_path / "hf", tmp_path / "taa", "--from-hf")]:
        result = cli("convert", option, source, "--out", out)
        assert result.exit_code == 0, result.output
        written = [out, *out.rglob("*")]
        assert out / "tokenizer" / "char_tokenizer.json" in written
        modes = {str(path.relative_to(out)): oct(stat.S_IMODE(path.stat().st_mode)) for path in written}
        assert modes == {name: oct((0o777 if (out / name).is_dir() else 0o666) & ~umask) for name in modes}
