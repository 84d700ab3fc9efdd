"""Training data too long or too short for the model is found before any training, in one
line naming the field or the file (and the line): a copy length past the model's positions,
a translation pair past them (training: left out with one warning that counts them;
validation and test: refused), a text shorter than one window of a language model's context."""

import random
import warnings

import pytest
import yaml

from tests.faults.conftest import COPY, TINY, assert_one_line_error, cli
from tests.faults.language_model import language_model_recipe

QUIET = ("--tracking", "none", "--no-progress")
SPLITS = ("train", "valid", "test")


def test_a_copy_length_past_the_model_positions_is_refused_naming_both_fields(tmp_path):
    result = cli("train", COPY, *TINY, "--set", "data.length=40", "--out", tmp_path / "run", *QUIET)
    assert_one_line_error(result, "data.length=40 exceeds model.max_length=32", max_lines=1)
    assert not (tmp_path / "run").exists()


def translation_recipe(folder, long_line: dict[str, int] = {}, pairs: int = 40, **model) -> str:
    """A tiny translation recipe on made-up parallel text written into ``folder``: ``pairs``
    pairs a split, one step; ``long_line`` puts a 5000-word sentence at that line of a
    split's source file."""
    vocabulary = ["ein", "mann", "hund", "fährt", "läuft", "rot", "der", "im", "park"]
    words = random.Random(0).choices(vocabulary, k=6 * pairs)
    data = {}
    for split in SPLITS:
        sources = [" ".join(words[6 * i : 6 * i + 6]) for i in range(pairs)]
        if split in long_line:
            sources[long_line[split] - 1] = " ".join(["hund"] * 5000)
        files = [folder / f"{split}.de", folder / f"{split}.en"]
        files[0].write_text("\n".join(sources) + "\n", encoding="utf-8")
        files[1].write_text("\n".join(s.upper() for s in sources) + "\n", encoding="utf-8")
        data[f"{split}_files"] = [str(f) for f in files]
    recipe = {
        "task": "translation",
        "model": {"preset": "vaswani-tiny", "d_model": 16, "n_heads": 2, "d_ff": 32, "n_encoder_layers": 1,
                  "n_decoder_layers": 1, "max_length": 64, **model},
        "data": {**data, "vocab_size": 40, "max_tokens": 256, "bleu_sentences": 2, "beam": 1, "max_extra": 2},
        "train": {"steps": 1, "warmup_steps": 1, "threads": 1, "log_every": 1},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return str(path)


def test_a_training_pair_past_the_model_positions_is_left_out_with_one_warning(tmp_path):
    recipe = translation_recipe(tmp_path, {"train": 6})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cli("train", recipe, "--out", tmp_path / "run", *QUIET)
    assert result.exit_code == 0, result.output
    [warning] = [str(w.message) for w in caught]
    assert warning.startswith("1 of 40 training pairs left out: longer than the model's 64 positions "
                              f"(model.max_length); the first is {tmp_path / 'train.de'}, line 6 ("), warning


def test_no_training_pair_that_fits_is_one_line_before_training(tmp_path):
    recipe = translation_recipe(tmp_path, max_length=4)
    result = cli("train", recipe, "--out", tmp_path / "run", *QUIET)
    assert_one_line_error(result, "no training pair fits the model's 4 positions (model.max_length), the first is "
                          f"{tmp_path / 'train.de'}, line 1 (", max_lines=1)
    assert not (tmp_path / "run" / "state").exists()


@pytest.mark.parametrize("split", ["valid", "test"])
def test_a_validation_or_test_sentence_past_the_model_positions_is_refused_naming_its_line(tmp_path, split):
    recipe = translation_recipe(tmp_path, {split: 3})
    result = cli("train", recipe, "--out", tmp_path / "run", *QUIET)
    assert_one_line_error(result, f"{tmp_path / f'{split}.de'}, line 3: ", "tokens, more than the model reads "
                          "(64 positions, model.max_length)", max_lines=1)
    assert not (tmp_path / "run" / "state").exists()  # refused before training


@pytest.mark.parametrize("eval_batches", [2, 0])  # 0: validation reads every window of the text
def test_a_text_shorter_than_one_window_is_refused_naming_the_file_and_the_sizes(tmp_path, eval_batches):
    recipe = language_model_recipe(tmp_path)  # a context of 32 characters (model.max_length)
    (tmp_path / "text.txt").write_text("abcdefghij" * 10, encoding="utf-8")  # 100 characters: 90 train, 10 validate
    result = cli("train", recipe, "--set", f"data.eval_batches={eval_batches}", "--out", tmp_path / "run", *QUIET)
    assert_one_line_error(result, f"{tmp_path / 'text.txt'}: its validation part (the last 10% of the characters, "
                          "data.train_fraction=0.9) is 10 tokens, fewer than one window of 33", "data.block_size",
                          max_lines=1)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("task", ["language_model", "translation"])
def test_an_empty_training_file_is_one_line_naming_it(tmp_path, task):
    if task == "language_model":
        recipe, empty = language_model_recipe(tmp_path), tmp_path / "text.txt"
    else:
        recipe, empty = translation_recipe(tmp_path), tmp_path / "train.de"
    empty.write_bytes(b"")
    result = cli("train", recipe, "--out", tmp_path / "run", *QUIET)
    assert_one_line_error(result, str(empty), max_lines=1)
    assert not (tmp_path / "run").exists()
