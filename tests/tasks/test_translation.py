"""Translation end to end on a few hundred Multi30k pairs: train -> checkpoint -> kill and
resume -> translate -> evaluate, through the exact command-line forms users type."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from taa.config import RecipeConfig
from taa.data import find_data_dir
from taa.tasks.translation import TranslationBatches, bleu_scores, load_translator, translate
from taa.torch.generate import beam_search, greedy_decode

from tests.helpers import assert_same_weights, run_and_sigkill

pytest.importorskip("sacrebleu")
DATA = find_data_dir(None) or Path(__file__).resolve().parents[3] / "shared" / "data"
if not (DATA / "multi30k" / "train.de.gz").is_file():
    pytest.skip(f"Multi30k not found under {DATA} (set TAA_DATA)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "translate-tiny.yaml"
SETTINGS = ["--set", f"data.dir={DATA}", "--tracking", "none", "--no-progress"]


def taa(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "taa.cli", *args], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An uninterrupted tiny run."""
    out = tmp_path_factory.mktemp("whole") / "run"
    result = taa("train", str(TINY), "--out", str(out), *SETTINGS)
    assert result.returncode == 0, result.stderr
    return out


def test_run_folder_holds_a_complete_checkpoint(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"model.safetensors", "recipe.yaml", "metrics.json", "tokenizer", "state", "best",
            "test_hypotheses.txt", "training_curves.png"} <= names
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("test_bleu", "test_bleu_lowercase", "test_chrf"):
        assert 0.0 <= metrics[key] <= 100.0
    assert metrics["steps"] == 30 and metrics["test_sentences"] == 40
    assert len(list((trained / "best").glob("step-*.safetensors"))) == 2  # keep_best: 2
    assert (trained / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sigkill_and_resume_end_with_the_same_weights(trained, tmp_path):
    out = tmp_path / "killed"
    settings = [*SETTINGS, "--set", "train.checkpoint_every=2"]
    run_and_sigkill([sys.executable, "-m", "taa.cli", "train", str(TINY), "--out", str(out), *settings], out, 12)
    result = taa("train", str(TINY), "--resume", str(out), *settings)
    assert result.returncode == 0, result.stderr
    assert_same_weights(trained / "model.safetensors", out / "model.safetensors")
    assert json.loads((out / "metrics.json").read_text())["test_bleu"] == pytest.approx(
        json.loads((trained / "metrics.json").read_text())["test_bleu"])


def test_translate_arguments_and_stdin(trained):
    by_argument = taa("translate", "--checkpoint", str(trained), "--beam", "2", "Ein Hund rennt.", "Zwei Männer.")
    assert by_argument.returncode == 0, by_argument.stderr
    assert len(by_argument.stdout.splitlines()) == 2
    by_stdin = taa("translate", "--checkpoint", str(trained), "--beam", "2", input="Ein Hund rennt.\nZwei Männer.\n")
    assert by_stdin.stdout == by_argument.stdout
    capped = taa("translate", "--checkpoint", str(trained), "--beam", "1", "--max-len", "3", "Ein Hund rennt.")
    model, tokenizer, _ = load_translator(trained)
    assert len(tokenizer.encode_target(capped.stdout.strip())) <= 2 + 2  # <s> + at most 2 tokens + </s>


def test_evaluate_json_matches_the_training_run(trained, tmp_path):
    source, reference = tmp_path / "test.de", tmp_path / "test.en.gz"
    with gzip.open(DATA / "multi30k" / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as f:
        source.write_text("".join(f.readlines()[:40]), encoding="utf-8")  # plain text
    with gzip.open(DATA / "multi30k" / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as f:
        lines = f.readlines()[:40]
    with gzip.open(reference, "wt", encoding="utf-8") as f:  # gzip
        f.write("".join(lines))
    result = taa("evaluate", "--checkpoint", str(trained), "--source", str(source), "--reference", str(reference),
                 "--beam", "2", "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["sentences"] == 40
    metrics = json.loads((trained / "metrics.json").read_text())
    assert scores["bleu"] == pytest.approx(metrics["test_bleu"])
    assert scores["bleu_lowercase"] == pytest.approx(metrics["test_bleu_lowercase"])
    assert scores["chrf"] == pytest.approx(metrics["test_chrf"])


def test_evaluate_length_penalty_overrides_the_recipe(trained, tmp_path):
    for side in ("de", "en"):
        with gzip.open(DATA / "multi30k" / f"test_2016_flickr.{side}.gz", "rt", encoding="utf-8") as f:
            (tmp_path / f"test.{side}").write_text("".join(f.readlines()[:20]), encoding="utf-8")
    result = taa("evaluate", "--checkpoint", str(trained), "--source", str(tmp_path / "test.de"),
                 "--reference", str(tmp_path / "test.en"), "--beam", "3", "--length-penalty", "1.5", "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    model, tokenizer, recipe = load_translator(trained)
    assert scores["length_penalty"] == 1.5 != recipe.data.length_penalty
    sources = (tmp_path / "test.de").read_text(encoding="utf-8").splitlines()
    hypotheses = translate(model, tokenizer, sources, beam=3, length_penalty=1.5, max_extra=recipe.data.max_extra)
    references = (tmp_path / "test.en").read_text(encoding="utf-8").splitlines()
    assert scores["bleu"] == pytest.approx(bleu_scores(hypotheses, references)["bleu"])
    by_cli = taa("translate", "--checkpoint", str(trained), "--beam", "3", "--length-penalty", "1.5", *sources[:5])
    assert by_cli.returncode == 0, by_cli.stderr
    assert by_cli.stdout.splitlines() == hypotheses[:5]


def test_the_recipe_decodes_by_default_and_generate_decodes_as_translate(trained, tmp_path):
    """translate, evaluate and generate take the recipe's beam, length penalty and max_extra;
    with the same settings generate and translate give the same tokens."""
    model, tokenizer, recipe = load_translator(trained)
    assert recipe.data.beam == 2 != 4  # not the paper's beam: the default visibly comes from the recipe
    sentences = ["Ein Hund rennt durch den Schnee.", "Zwei Männer spielen Fußball.", "Eine Frau."]
    expected = translate(model, tokenizer, sentences, beam=recipe.data.beam, length_penalty=recipe.data.length_penalty,
                         max_extra=recipe.data.max_extra)
    by_default = taa("translate", "--checkpoint", str(trained), *sentences)
    assert by_default.returncode == 0, by_default.stderr
    assert by_default.stdout.splitlines() == expected
    for sentence, translation in zip(sentences, expected):
        result = taa("generate", "--checkpoint", str(trained), "--prompt", sentence, "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["text"] == translation
    options = ["--beam", "3", "--length-penalty", "1.5"]
    translated = taa("translate", "--checkpoint", str(trained), *options, sentences[0])
    generated = taa("generate", "--checkpoint", str(trained), *options, "--prompt", sentences[0])
    assert translated.returncode == 0 and generated.returncode == 0, translated.stderr + generated.stderr
    assert generated.stdout == translated.stdout  # one line, the same translation
    # evaluate with no option: the run's own final test figures
    for side in ("de", "en"):
        with gzip.open(DATA / "multi30k" / f"test_2016_flickr.{side}.gz", "rt", encoding="utf-8") as f:
            (tmp_path / f"test.{side}").write_text("".join(f.readlines()[:40]), encoding="utf-8")
    result = taa("evaluate", "--checkpoint", str(trained), "--source", str(tmp_path / "test.de"),
                 "--reference", str(tmp_path / "test.en"), "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert (scores["beam"], scores["length_penalty"]) == (recipe.data.beam, recipe.data.length_penalty)
    assert scores["bleu"] == pytest.approx(json.loads((trained / "metrics.json").read_text())["test_bleu"])


def _files(source: bytes, reference: bytes):
    def write(folder: Path) -> None:
        (folder / "src.de").write_bytes(source)
        (folder / "ref.en").write_bytes(reference)

    return write


@pytest.mark.parametrize("make_bad, message", [
    (lambda d: None, "src.de: no such file"),
    (_files(b"eins\nzwei\n", b"one\n"), "src.de has 2 lines but"),
    (_files(b"eins\n\n", b"one\ntwo\n"), "src.de, line 2: empty line"),
    (_files(b"eins\n\xff\xfe\n", b"one\ntwo\n"), "src.de, line 2: invalid UTF-8"),
])
def test_evaluate_bad_input_is_one_line(trained, tmp_path, make_bad, message):
    make_bad(tmp_path)
    result = taa("evaluate", "--checkpoint", str(trained), "--source", str(tmp_path / "src.de"),
                 "--reference", str(tmp_path / "ref.en"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr


def test_train_with_bad_data_keeps_earlier_output(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    source, target = tmp_path / "a.de", tmp_path / "a.en"
    source.write_text("eins\nzwei\ndrei\n")
    target.write_text("one\ntwo\n")
    result = taa("train", str(TINY), "--out", str(out), *SETTINGS,
                 "--set", f"data.train_files=[{source},{target}]")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "a.de has 3 lines but" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "earlier work"


def test_viz_attention_writes_a_png(trained, tmp_path):
    picture = tmp_path / "attention.png"
    result = taa("viz", "attention", "--checkpoint", str(trained), "--out", str(picture), "Ein Hund rennt.")
    assert result.returncode == 0, result.stderr
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_beam_one_equals_greedy_on_the_trained_model(trained):
    model, tokenizer, _ = load_translator(trained)
    sentences = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau."]
    assert translate(model, tokenizer, sentences, beam=1) == [
        tokenizer.decode_target(ids) for ids in beam_search(
            model, torch.nn.utils.rnn.pad_sequence([torch.tensor(tokenizer.encode_source(s)) for s in sentences],
                                                   batch_first=True), beam_size=1, length_penalty=0.0)]
    source = torch.tensor([tokenizer.encode_source(sentences[0])])
    assert tokenizer.decode_target(greedy_decode(model, source)[0].tolist()) == translate(
        model, tokenizer, sentences[:1], beam=1)[0]


def test_batches_resume_where_they_stopped():
    encoded = [([5] * (1 + i % 7), [1] + [6] * (1 + i % 5) + [2]) for i in range(200)]
    stream = TranslationBatches(encoded, max_tokens=64, seed=3, pad_id=0)
    for _ in range(17):
        next(stream)
    saved = stream.state_dict()
    expected = [next(stream) for _ in range(40)]  # crosses an epoch boundary
    again = TranslationBatches(encoded, max_tokens=64, seed=3, pad_id=0)
    again.load_state_dict(saved)
    for a, b in zip(expected, (next(again) for _ in range(40))):
        assert torch.equal(a.source, b.source) and torch.equal(a.target_output, b.target_output)


def test_recipes_parse():
    for name in ("translate-multi30k", "translate-multi30k-small", "translate-tiny"):
        recipe = RecipeConfig.load(ROOT / "recipes" / f"{name}.yaml")
        assert recipe.task == "translation"
    full = RecipeConfig.load(ROOT / "recipes" / "translate-multi30k.yaml")
    assert full.train.label_smoothing == 0.1 and full.data.beam == 4 and full.data.length_penalty == 1.4


def test_bucketed_batches_fill_one_shape_per_bucket_within_the_budget():
    """A compiled model's batches: every pair once per epoch, each batch padded to its
    bucket's shape, whose area stays within the token budget; one shape per bucket."""
    from taa.tasks.translation import PaddedShapes, to_batch

    rng = np.random.default_rng(0)
    encoded = [(list(range(1, int(a) + 1)), list(range(1, int(b) + 1)))
               for a, b in rng.integers(3, 70, size=(500, 2))]
    shapes = PaddedShapes(encoded, max_tokens=256)
    batches = shapes.batcher(seed=1).epoch_batches(0)
    assert sorted(i for batch in batches for i in batch) == list(range(len(encoded)))
    seen = set()
    for batch in batches:
        padded = to_batch([encoded[i] for i in batch], 0, shapes)
        rows, length = padded.source.shape
        assert rows * length <= 256 and padded.target_input.shape == (rows, length - 1)
        seen.add((rows, length))
    assert seen <= {(rows, bucket) for bucket, rows in shapes.rows.items()}  # at most one shape per bucket
    assert len(shapes.rows) == len({shapes.bucket(max(map(len, pair))) for pair in encoded}) > 4
