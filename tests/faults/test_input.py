"""Any input a person can type is answered: text longer than the model reads, bytes that are
not text, empty and mismatched files, absurd token counts, numbers a decoder cannot use (nan,
inf, a beam of millions, a seed past 64 bits), recipes and ``--set`` overrides that say
nothing or the wrong thing (a bad ``--set`` value is blamed on the ``--set``, not the file).
Each ends in one line (an error with a non-zero exit, or a warning on standard error beside
the answer), never a traceback or a nonsense run."""

import json
import subprocess
import sys

import pytest

from tests.checkpoints import language_model_run, translation_run
from tests.faults.conftest import COPY, assert_one_line_error, cli
from tests.faults.language_model import language_model_recipe
from tests.faults.test_damaged_files import classifier_run

LONG = " ".join(["ein hund rennt ."] * 40)  # 160 words: more than the 64 positions of every model here
LONG_ENGLISH = " ".join(["a good film"] * 30)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A translation run, a language model and a classifier (random weights, context 64/16)."""
    root = tmp_path_factory.mktemp("input")
    return {"tr": translation_run(root / "tr"), "lm": language_model_run(root / "lm"),
            "cls": classifier_run(root / "cls"), "root": root}


def written(tmp_path, name: str, data: str | bytes):
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# ------------------------------------------------------------------ longer than the model reads


def test_translate_refuses_a_sentence_longer_than_the_encoder_reads(runs):
    result = cli("translate", "--checkpoint", runs["tr"], "ein hund .", LONG)
    assert_one_line_error(result, "sentence 2:", "more than the model reads (64 positions")


def test_evaluate_refuses_a_source_line_longer_than_the_encoder_reads(runs, tmp_path):
    source = written(tmp_path, "source.txt", f"ein hund .\n{LONG}\n")
    reference = written(tmp_path, "reference.txt", "a dog .\na dog runs .\n")
    result = cli("evaluate", "--checkpoint", runs["tr"], "--source", source, "--reference", reference)
    assert_one_line_error(result, f"{source}, line 2:", "more than the model reads")


def test_viz_attention_refuses_a_sentence_longer_than_the_encoder_reads(runs, tmp_path):
    result = cli("viz", "attention", "--checkpoint", runs["tr"], "--out", tmp_path / "attention.png", LONG)
    assert_one_line_error(result, "the sentence:", "more than the model reads")
    assert not (tmp_path / "attention.png").exists()


def test_generate_refuses_an_encoder_decoder_source_longer_than_it_reads(runs):
    assert_one_line_error(cli("generate", "--checkpoint", runs["tr"], "--prompt", LONG), "--prompt:",
                          "more than the model reads")


@pytest.mark.parametrize("command", ["classify", "embed"])
def test_classify_and_embed_cut_a_long_sentence_with_one_warning(runs, command):
    result = cli(command, "--checkpoint", runs["cls"], "a good film", LONG_ENGLISH)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"taa {command}: 1 sentence (2) longer than the model reads: cut to 16 tokens"
    assert len(result.stdout.strip().splitlines()) == 2


def test_evaluate_on_a_classifier_cuts_long_sentences_with_one_warning(runs, tmp_path):
    data = written(tmp_path, "labelled.tsv", f"a good film\t1\n{LONG_ENGLISH}\t0\n")
    result = cli("evaluate", "--checkpoint", runs["cls"], "--data", data)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (f"taa evaluate: {data}: 1 sentence (2) longer than the model reads: "
                                     "cut to 16 tokens")


def test_a_long_prompt_of_a_language_model_slides_with_one_warning(runs):
    result = cli("generate", "--checkpoint", runs["lm"], "--prompt", "to be " * 20, "--max-new-tokens", "2")
    assert result.exit_code == 0, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "context of 64 tokens" in result.stderr


# ------------------------------------------------------------------ token counts


def test_an_absurd_max_new_tokens_is_refused(runs):
    assert_one_line_error(cli("generate", "--checkpoint", runs["lm"], "--prompt", "to", "--max-new-tokens",
                              "10000000"), "--max-new-tokens 10,000,000: give 0 to 1,000,000")


def test_an_encoder_decoder_stops_at_its_decoder_positions(runs):
    result = cli("generate", "--checkpoint", runs["tr"], "--prompt-ids", "5 6", "--max-new-tokens", "1000000",
                 "--no-sample", "--beam", "1", "--json")
    assert result.exit_code == 0, result.output
    assert "stopping at 64" in result.stderr
    assert len(json.loads(result.stdout)["tokens"]) <= 64


def test_translate_caps_max_len_at_the_decoder_positions(runs):
    result = cli("translate", "--checkpoint", runs["tr"], "--max-len", "10000000", "--beam", "1", "ein hund .")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == ("taa translate: --max-len 10000000 passes the decoder's 64 positions "
                                     "(max_length): outputs stop at 64")


# ------------------------------------------------------------------ bytes that are not text


@pytest.mark.parametrize("command, run", [("translate", "tr"), ("classify", "cls"), ("embed", "cls")])
@pytest.mark.parametrize("data, fragment", [(b"a good film\n\xff\xfe film\n", "invalid UTF-8"),
                                            (b"a good film\nfilm\x00bad\n", "a NUL byte")], ids=["utf8", "nul"])
def test_standard_input_that_is_not_text_names_the_line(runs, command, run, data, fragment):
    result = cli(command, "--checkpoint", runs[run], input=data)
    assert_one_line_error(result, "standard input, line 2:", fragment)


def test_an_argument_that_is_not_utf8_is_one_line():
    """A shell passes bytes that are not UTF-8 on as lone surrogates: the tokenizer never sees them."""
    result = subprocess.run([sys.executable, "-m", "taa", "generate", "--checkpoint", "no-such-folder",
                             "--prompt", b"caf\xe9"], capture_output=True, timeout=120)
    assert_one_line_error(result, "--prompt: invalid UTF-8 at character 3")


def test_sentence_arguments_that_are_not_text_are_one_line(runs):
    assert_one_line_error(cli("classify", "--checkpoint", runs["cls"], "fine", "caf\udce9"),
                          "sentence 2: invalid UTF-8")


# ------------------------------------------------------------------ empty sentences


@pytest.mark.parametrize("command, run", [("translate", "tr"), ("classify", "cls"), ("embed", "cls")])
def test_an_empty_line_of_standard_input_is_refused_naming_it(runs, command, run):
    """As evaluate refuses an empty line: a model given nothing answers something (a
    translation, a label, a vector) that would pass for the answer to a sentence."""
    result = cli(command, "--checkpoint", runs[run], input="a good film\n \nbad\n")
    assert_one_line_error(result, "standard input, line 2: empty line")
    assert result.stdout == ""


@pytest.mark.parametrize("command, run", [("translate", "tr"), ("classify", "cls"), ("embed", "cls")])
def test_an_empty_sentence_argument_is_refused_naming_it(runs, command, run):
    assert_one_line_error(cli(command, "--checkpoint", runs[run], "a good film", ""), "sentence 2: empty")


# ------------------------------------------------------------------ an empty path


EMPTY_PATHS = [
    ("--checkpoint", ["translate", "--checkpoint", "", "ein hund ."]),
    ("--checkpoint", ["evaluate", "--checkpoint", "", "--data", "text.txt"]),
    ("--source", ["evaluate", "--checkpoint", "tr", "--source", "", "--reference", "text.txt"]),
    ("--reference", ["evaluate", "--checkpoint", "tr", "--source", "text.txt", "--reference", ""]),
    ("--data", ["evaluate", "--checkpoint", "lm", "--data", ""]),
    ("--checkpoint", ["viz", "attention", "--checkpoint", "", "--out", "a.png", "ein hund ."]),
    ("--checkpoint", ["generate", "--checkpoint", "", "--prompt", "to be"]),
    ("--checkpoint", ["embed", "--checkpoint", "", "a good film"]),
    ("--checkpoint", ["classify", "--checkpoint", "", "a good film"]),
    ("--from-hf", ["convert", "--from-hf", "", "--out", "converted"]),
    ("--to-hf", ["convert", "--to-hf", "", "--out", "converted"]),
    ("--resume", ["train", "--resume", "", "--tracking", "none"]),
    ("RECIPE", ["train", "", "--tracking", "none"]),
]


@pytest.mark.parametrize("option, args", EMPTY_PATHS, ids=[f"{args[0]} {option}" for option, args in EMPTY_PATHS])
def test_an_empty_path_is_one_line_naming_the_option(runs, tmp_path, monkeypatch, option, args):
    """Not the working folder (an empty path is no name for it): whatever the working folder
    holds, the command says the option is empty, and reads or writes nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_text("to be or not to be\n")
    args = [str(runs[arg]) if arg in ("tr", "lm") else arg for arg in args]
    result = cli(*args)
    assert_one_line_error(result, f"Error: {option} is empty: name the folder or file to read (. for the working "
                                  "folder)", max_lines=1)
    assert [path.name for path in tmp_path.iterdir()] == ["text.txt"]


# ------------------------------------------------------------------ evaluate's files


@pytest.mark.parametrize("option, run", [("--source", "tr"), ("--reference", "tr"), ("--data", "lm"),
                                         ("--data", "cls")], ids=["source", "reference", "lm-data", "cls-data"])
def test_an_input_file_that_is_a_folder_says_so(runs, tmp_path, option, run):
    files = {"--source": written(tmp_path, "source.txt", "ein hund .\n"),
             "--reference": written(tmp_path, "reference.txt", "a dog .\n")} if run == "tr" else {}
    files[option] = folder = tmp_path / "folder"
    folder.mkdir()
    result = cli("evaluate", "--checkpoint", runs[run], *[str(a) for item in files.items() for a in item])
    assert_one_line_error(result, f"{folder}: a folder, not a file")


def test_a_training_text_that_is_a_folder_says_so(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    result = cli("train", language_model_recipe(tmp_path), "--set", f"data.file={folder}", "--out", tmp_path / "run",
                 "--tracking", "none", "--no-progress")
    assert_one_line_error(result, f"{folder}: a folder, not a file")


@pytest.mark.parametrize("source, reference, fragment", [
    ("", "a dog .\n", "source.txt: an empty file"),
    ("ein hund .\n", "", "reference.txt: an empty file"),
    ("ein hund .\nzwei .\n", "a dog .\n", "has 2 lines but"),
], ids=["empty-source", "empty-reference", "mismatched"])
def test_evaluate_refuses_empty_or_mismatched_parallel_files(runs, tmp_path, source, reference, fragment):
    result = cli("evaluate", "--checkpoint", runs["tr"], "--source", written(tmp_path, "source.txt", source),
                 "--reference", written(tmp_path, "reference.txt", reference))
    assert_one_line_error(result, fragment)


@pytest.mark.parametrize("run, data, fragment", [
    ("cls", "", "no labelled sentences"), ("cls", "\n\n", "no labelled sentences"),
    ("lm", "", "the file holds no text"), ("lm", "\n \n", "the file holds no text"),
], ids=["classifier-empty", "classifier-blank", "lm-empty", "lm-blank"])
def test_evaluate_refuses_an_empty_data_file(runs, tmp_path, run, data, fragment):
    path = written(tmp_path, "data.txt", data)
    assert_one_line_error(cli("evaluate", "--checkpoint", runs[run], "--data", path), str(path), fragment)


@pytest.mark.parametrize("run, data, fragment", [
    ("cls", b"a good film\t1\nbad \xff\t0\n", "line 2: invalid UTF-8"),
    ("cls", b"a good film\t1\nbad\x00\t0\n", "line 2: a NUL byte"),
    ("lm", b"to be\nor \xff\n", "line 2: invalid UTF-8"),
    ("lm", b"to be\nor \x00not\n", "line 2: a NUL byte"),
], ids=["classifier-utf8", "classifier-nul", "lm-utf8", "lm-nul"])
def test_evaluate_refuses_a_data_file_that_is_not_text(runs, tmp_path, run, data, fragment):
    path = written(tmp_path, "data.txt", data)
    assert_one_line_error(cli("evaluate", "--checkpoint", runs[run], "--data", path), f"{path}, {fragment}")


# ------------------------------------------------------------------ recipes and --set


def train(*args):
    return cli("train", *args, "--tracking", "none", "--no-progress")


@pytest.mark.parametrize("text, fragment", [
    ("", "an empty file"),
    ("# only a comment\n", "an empty file"),
    ("task: copy\ntrain: 5\n", "train should be a mapping"),
    ("task: copy\nmodel: [1, 2]\n", "model should be a mapping of fields, got [1, 2]"),
    ("task: copy\nmodel:\n", "model should be a mapping of fields, got None"),
    ("task: copy\nmodel:\n  preset: [copy-task]\n", "model.preset=['copy-task'] is unknown"),
    ("task: copy\nmodel:\n  preset: copy-task\n   d_model: 3\n", ", line 4: mapping values are not allowed here"),
    ("task: copy\ntrain:\n\tsteps: 3\n", ", line 3:"),
], ids=["empty", "comments", "train-5", "model-list", "model-null", "preset-list", "yaml-syntax", "tab"])
def test_a_recipe_that_says_nothing_or_the_wrong_thing_is_one_line(tmp_path, text, fragment):
    recipe = written(tmp_path, "recipe.yaml", text)
    assert_one_line_error(train(recipe, "--out", tmp_path / "run"), str(recipe), fragment)
    assert not (tmp_path / "run").exists()


def test_a_recipe_that_is_not_utf8_names_the_line(tmp_path):
    recipe = written(tmp_path, "recipe.yaml", b"task: copy\nname: caf\xe9\n")
    assert_one_line_error(train(recipe, "--out", tmp_path / "run"), f"{recipe}, line 2: not UTF-8 text")


def test_fields_set_into_a_recipe_section_that_is_no_mapping_are_refused(tmp_path):
    recipe = written(tmp_path, "recipe.yaml", "task: copy\ntrain: 5\n")
    assert_one_line_error(train(recipe, "--set", "train.steps=1", "--out", tmp_path / "run"),
                          "train=5 is not a section, so train.steps cannot go into it")


@pytest.mark.parametrize("overrides, fragment", [
    (["train.steps"], "--set 'train.steps': expected key=value"),
    (["=5"], "expected key=value"),
    (["train..steps=4"], "has an empty field name"),
    (["train.steps=5", "train=5"], "would replace what earlier --set gave train (train.steps)"),
    (["train.steps=5", "train=null"], "would replace what earlier --set gave train"),
    (["train=5", "train.steps=5"], "train was set to 5, not a section"),
    (["model=5"], "--set model=5: a section takes a mapping of fields"),
    (["train=[1]"], "--set train=[1]: a section takes a mapping of fields"),
], ids=["no-equals", "no-key", "empty-name", "section-after-field", "null-after-field", "field-after-scalar",
        "model-scalar", "train-list"])
def test_bad_set_overrides_are_one_line(tmp_path, overrides, fragment):
    args = [arg for override in overrides for arg in ("--set", override)]
    assert_one_line_error(train(COPY, *args, "--out", tmp_path / "run"), fragment)
    assert not (tmp_path / "run").exists()


def test_a_later_section_mapping_keeps_the_fields_set_before(tmp_path):
    """``--set train.steps=-1 --set train={}``: the empty mapping merges, so the bad step
    count set first is still there to be refused (it was never silently dropped)."""
    result = train(COPY, "--set", "train.steps=-1", "--set", "train={}", "--out", tmp_path / "run")
    assert_one_line_error(result, "steps=-1 must be positive")
    result = train(COPY, "--set", "train.steps=-1", "--set", "train={batch_size: 4}", "--out", tmp_path / "run")
    assert_one_line_error(result, "steps=-1 must be positive")


def test_a_recipe_path_that_is_a_folder_says_so(tmp_path):
    (tmp_path / "recipes").mkdir()
    assert_one_line_error(train(tmp_path / "recipes", "--out", tmp_path / "run"),
                          f"{tmp_path / 'recipes'}: a folder, not a recipe file")


@pytest.mark.parametrize("overrides, blamed, fragment", [
    (["train.steps=abc"], "--set train.steps=abc:", "train.steps='abc' should be an integer"),
    (["train.steps=5", "train.lr=nan"], "--set train.lr=nan:", "lr=nan must be a finite number"),
    (["train.stepz=5"], "--set train.stepz=5:", "unknown field train.stepz"),
    (["train.seed=100000000000000000000000"], "--set train.seed=1", "must be in [0, 2**32)"),
    (["train.seed=-1"], "--set train.seed=-1:", "must be in [0, 2**32)"),
    (["train.threads=100000"], "--set train.threads=100000:", "threads=100000 must be at most 1024"),
], ids=["type", "second-set", "unknown-field", "huge-seed", "negative-seed", "threads"])
def test_a_bad_set_value_is_blamed_on_the_set_not_the_recipe(tmp_path, overrides, blamed, fragment):
    args = [arg for override in overrides for arg in ("--set", override)]
    output = assert_one_line_error(train(COPY, *args, "--out", tmp_path / "run"), blamed, fragment)
    assert COPY not in output


def test_a_bad_set_on_a_resume_without_recipe_is_blamed_on_the_set(tiny_run):
    output = assert_one_line_error(train("--resume", tiny_run, "--set", "train.steps=abc"),
                                   "--set train.steps=abc:", "should be an integer")
    assert "given_recipe.yaml" not in output


def test_a_recipe_error_stays_the_recipe_s_beside_a_good_set(tmp_path):
    recipe = written(tmp_path, "recipe.yaml", "task: copy\ntrain:\n  steps: abc\n")
    output = assert_one_line_error(train(recipe, "--set", "train.lr=0.1", "--out", tmp_path / "run"),
                                   f"{recipe}: train.steps='abc' should be an integer")
    assert "--set" not in output


# ------------------------------------------------------------------ numbers: nan, inf, out of range


NUMBERS = [
    (["generate", "lm", "--temperature", "nan"], "'--temperature': nan is not a finite number"),
    (["generate", "lm", "--temperature", "inf"], "'--temperature': inf is not a finite number"),
    (["generate", "lm", "--temperature", "-1"], "'--temperature': -1.0 is not in the range"),
    (["generate", "lm", "--top-p", "nan"], "'--top-p': nan is not a finite number"),
    (["generate", "tr", "--length-penalty", "nan"], "'--length-penalty': nan is not a finite number"),
    (["generate", "tr", "--length-penalty", "1e300"], "'--length-penalty': 1e+300 is not in the range 0<=x<=10"),
    (["translate", "tr", "--length-penalty", "nan"], "'--length-penalty': nan is not a finite number"),
    (["translate", "tr", "--length-penalty", "inf"], "'--length-penalty': inf is not in the range"),
    (["evaluate", "tr", "--length-penalty", "nan"], "'--length-penalty': nan is not a finite number"),
    (["translate", "tr", "--beam", "100000000"], "'--beam': 100000000 is not in the range 1<=x<=64"),
    (["evaluate", "tr", "--beam", "100000000"], "'--beam': 100000000 is not in the range 1<=x<=64"),
    (["generate", "tr", "--beam", "100000000"], "'--beam': 100000000 is not in the range 1<=x<=64"),
    (["generate", "lm", "--seed", "1e23"], "'--seed': '1e23' is not a valid integer"),
    (["generate", "lm", "--seed", str(10**30)], f"'--seed': {10**30} is not in the range 0<=x<={2**64 - 1}"),
    (["generate", "lm", "--seed", "-1"], "'--seed': -1 is not in the range"),
]


@pytest.mark.parametrize("args, fragment", NUMBERS, ids=[f"{args[0]}{args[2]}={args[3]}" for args, _ in NUMBERS])
def test_a_number_a_decoder_cannot_use_is_one_line_naming_the_option(runs, tmp_path, args, fragment):
    command, run, *options = args
    inputs = {"generate": ["--prompt", "ein hund ." if run == "tr" else "to be"], "translate": ["ein hund ."],
              "evaluate": ["--source", written(tmp_path, "source.txt", "ein hund .\n"),
                           "--reference", written(tmp_path, "reference.txt", "a dog .\n")]}[command]
    assert_one_line_error(cli(command, "--checkpoint", runs[run], *options, *inputs), fragment)


def test_the_edges_of_the_decoder_s_numbers_decode(runs):
    """A temperature so small that every logit but the largest divides to -inf samples the
    most likely token, as the limit does; the largest seed and length penalty are taken."""
    def tokens(*options):
        result = cli("generate", "--checkpoint", runs["lm"], "--prompt", "to be", "--max-new-tokens", "5", "--json",
                     *options)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["tokens"]

    assert tokens("--temperature", "1e-300", "--seed", "1") == tokens("--no-sample")
    assert len(tokens("--seed", str(2**64 - 1), "--sample")) == 5
    result = cli("translate", "--checkpoint", runs["tr"], "--length-penalty", "10", "--beam", "2", "ein hund .")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("nucleus", [("--top-k", "1"), ("--top-p", "1e-9")], ids=["top-k", "top-p"])
def test_top_k_1_and_a_tiny_nucleus_are_greedy_at_any_temperature(runs, nucleus):
    """A huge temperature divides every logit to the same number; the tokens kept are still
    the model's most likely, ranked by the logits: one token kept is the greedy one."""
    def tokens(*options):
        result = cli("generate", "--checkpoint", runs["lm"], "--prompt", "to be", "--max-new-tokens", "20", "--json",
                     *options)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["tokens"]

    greedy = tokens("--no-sample")
    for temperature in ("1e308", "1e30", "1"):
        assert tokens(*nucleus, "--temperature", temperature, "--seed", "2") == greedy, temperature
