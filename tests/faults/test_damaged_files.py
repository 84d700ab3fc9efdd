"""Damaged or foreign files in a model folder are one line naming the file, in every command
that loads weights, for taa runs, converted taa models (model.yaml) and Hugging Face folders.

The folders are built once for the module, from random weights (no training but the small
copy run that ``train --resume`` continues); each test damages a copy: weights cut short, a
pickle under the safetensors name, an empty file, random bytes, a damaged header, integers
where the model has floating-point weights, nan and inf among the weights; descriptions (recipe.yaml, model.yaml,
config.json) and tokenizer files that are empty, not UTF-8, not a mapping or not parseable.
"""

import pickle
import random
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from taa import api
from taa import config as cfg
from taa.torch.training.checkpoint import save_checkpoint

from tests.checkpoints import language_model_run, translation_run
from tests.faults.conftest import COPY, TINY, assert_one_line_error, cli

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "good", "bad", "film"]


def classifier_run(folder: Path) -> Path:
    """A bert-tiny sentence classifier with a WordLevel tokenizer that adds [CLS] and [SEP]."""
    from taa.torch.models.bert import BertForSequenceClassification

    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    recipe = cfg.RecipeConfig.from_dict({
        "task": "classification", "data": {"tokenizer": "tokenizer.json", "max_length": 16},
        "model": {"preset": "bert-tiny", "vocab_size": len(WORDS), "max_length": 16, "num_labels": 2},
    })

    def save_tokenizer(run: Path) -> None:
        (run / "tokenizer").mkdir()
        tokenizer.save(str(run / "tokenizer" / "tokenizer.json"))

    torch.manual_seed(0)
    return save_checkpoint(folder, BertForSequenceClassification(recipe.model), recipe, {}, write_extra=save_tokenizer)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every kind of folder, once: taa runs (lm, tr, cls), Hugging Face folders (hf_gpt,
    hf_cls) and converted taa models (m_gpt, m_cls); a resumable copy run; input files."""
    root = tmp_path_factory.mktemp("damaged")
    language_model_run(root / "lm")
    translation_run(root / "tr")
    classifier_run(root / "cls")
    api.convert(to_hf=root / "lm", out=root / "hf_gpt")
    api.convert(to_hf=root / "cls", out=root / "hf_cls")
    api.convert(from_hf=root / "hf_gpt", out=root / "m_gpt")
    api.convert(from_hf=root / "hf_cls", out=root / "m_cls")
    result = cli("train", COPY, *TINY, "--out", root / "copy", "--tracking", "none", "--no-progress")
    assert result.exit_code == 0, result.output
    (root / "text.txt").write_text("to be or not to be\n")
    (root / "labelled.tsv").write_text("a good film\t1\nbad\t0\n")
    (root / "source.txt").write_text("ein hund rennt .\n")
    (root / "reference.txt").write_text("a dog runs .\n")
    return root


@pytest.fixture
def folder(built, tmp_path, request):
    """A copy of the built folder named by the test's ``name`` parameter."""
    copy = tmp_path / request.param
    shutil.copytree(built / request.param, copy)
    return copy


def command(name: str, folder: Path, built: Path) -> list:
    """The command line of ``name`` on ``folder``."""
    return {
        "translate": ["translate", "--checkpoint", folder, "ein hund"],
        "evaluate-bleu": ["evaluate", "--checkpoint", folder, "--source", built / "source.txt",
                          "--reference", built / "reference.txt"],
        "evaluate-text": ["evaluate", "--checkpoint", folder, "--data", built / "text.txt"],
        "evaluate-labels": ["evaluate", "--checkpoint", folder, "--data", built / "labelled.tsv"],
        "generate": ["generate", "--checkpoint", folder, "--prompt-ids", "1 2", "--max-new-tokens", "2"],
        "embed": ["embed", "--checkpoint", folder, "a good film"],
        "classify": ["classify", "--checkpoint", folder, "a good film"],
        "to-hf": ["convert", "--to-hf", folder, "--out", folder.parent / "converted"],
        "from-hf": ["convert", "--from-hf", folder, "--out", folder.parent / "converted"],
        "resume": ["train", "--resume", folder, "--tracking", "none", "--no-progress"],
        "viz": ["viz", "attention", "--checkpoint", folder, "--out", folder.parent / "attention.png", "ein hund"],
    }[name]


# ------------------------------------------------------------------ ways to damage a file


def truncated(path: Path) -> str:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "truncated: its tensors need"


def cut_in_header(path: Path) -> str:
    path.write_bytes(path.read_bytes()[:20])
    return "truncated or damaged: its header claims"


def pickled(path: Path) -> str:
    torch.save({"weight": torch.zeros(3)}, path)  # what a .pt file holds, under the safetensors name
    return "never unpickles"


def empty(path: Path) -> str:
    path.write_bytes(b"")
    return "empty file"


def random_bytes(path: Path) -> str:
    path.write_bytes(random.Random(0).randbytes(4096))  # (seeded: its first byte is no pickle's by chance)
    return "not a safetensors file"


def damaged_header(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 10) + b"{not json}" + data[18:])
    return "damaged safetensors header"


def integers(path: Path) -> str:
    tensors = load_file(str(path))
    save_file({key: value.to(torch.int32) for key, value in tensors.items()}, str(path))
    return "tensors of the wrong kind"


def not_finite(path: Path) -> str:
    """nan in the first floating-point tensor, inf in the last: sound in every other way."""
    tensors = load_file(str(path))
    names = sorted(key for key, value in tensors.items() if value.is_floating_point())
    tensors[names[0]].view(-1)[:3] = float("nan")
    tensors[names[-1]].view(-1)[-1] = float("inf")
    save_file(tensors, str(path))
    return f"tensor {names[0]!r} holds 3 non-finite values (nan or inf) (and 1 more tensor); the file is damaged"


WEIGHT_DAMAGE = [truncated, cut_in_header, pickled, empty, random_bytes, damaged_header, integers, not_finite]

# (command, folder): each command that loads weights, each kind of folder it loads
LOADS = [
    ("translate", "tr"), ("evaluate-bleu", "tr"), ("viz", "tr"),
    *[(name, folder) for name, kinds in [("evaluate-text", ("lm", "hf_gpt", "m_gpt")),
                                          ("evaluate-labels", ("cls", "hf_cls", "m_cls")),
                                          ("generate", ("lm", "hf_gpt", "m_gpt")),
                                          ("embed", ("cls", "hf_cls", "m_cls")),
                                          ("classify", ("cls", "hf_cls", "m_cls")),
                                          ("to-hf", ("lm", "cls", "m_gpt", "m_cls")),
                                          ("from-hf", ("hf_gpt", "hf_cls"))] for folder in kinds],
]


@pytest.mark.parametrize("damage", WEIGHT_DAMAGE, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name, folder", LOADS, ids=[f"{c}-{f}" for c, f in LOADS], indirect=["folder"])
def test_damaged_weights_are_one_line_naming_the_file(built, name, folder, damage):
    weights = folder / "model.safetensors"
    what = damage(weights)
    result = cli(*command(name, folder, built))
    assert_one_line_error(result, str(weights) if damage is not integers else str(folder), what)
    assert not (folder.parent / "converted").exists()  # a failed conversion writes nothing


def header_length_like_a_pickle(path: Path) -> str:
    """The header's length damaged into 640 (0x0280): the file starts 0x80 0x02, as a pickle
    of protocol 2 does, but no pickle opcode follows; the header is safetensors' JSON cut short."""
    data = bytearray(path.read_bytes())
    assert int.from_bytes(data[:8], "little") > 640
    data[:8] = (640).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    return "a damaged safetensors header"


@pytest.mark.parametrize("name, folder", [("generate", "lm"), ("classify", "hf_cls"), ("to-hf", "m_gpt")],
                         indirect=["folder"])
def test_a_damaged_header_length_is_not_taken_for_a_pickle(built, name, folder):
    weights = folder / "model.safetensors"
    what = header_length_like_a_pickle(weights)
    output = assert_one_line_error(cli(*command(name, folder, built)), str(weights), what)
    assert "pickle" not in output


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("folder", ["lm"], indirect=True)
def test_a_pickle_of_any_protocol_is_named_and_never_unpickled(built, folder, protocol):
    weights = folder / "model.safetensors"
    weights.write_bytes(pickle.dumps({"weight": [0.0] * 3}, protocol=protocol))
    assert_one_line_error(cli(*command("generate", folder, built)), str(weights), "a pickle, not safetensors",
                          "never unpickles")


# ------------------------------------------------------------------ damaged descriptions


def not_utf8(path: Path) -> str:
    path.write_bytes(b"\xff\xfe\x00 not text\n")
    return "not UTF-8"


def not_a_mapping(path: Path) -> str:
    path.write_text("[1, 2]\n")
    return "expected a"


def syntax_error(path: Path) -> str:
    path.write_text('{"task": "copy",\n  "model": [1,\n' if path.suffix == ".json" else "task: copy\nmodel: [1,\n")
    return "line "


def no_text(path: Path) -> str:
    path.write_text("")
    return "empty file"


DESCRIPTION_DAMAGE = [not_utf8, not_a_mapping, syntax_error, no_text]
DESCRIPTIONS = [("classify", "cls", "recipe.yaml"), ("generate", "m_gpt", "model.yaml"),
                ("from-hf", "hf_gpt", "config.json")]


@pytest.mark.parametrize("damage", DESCRIPTION_DAMAGE, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name, folder, file", DESCRIPTIONS, ids=[f for _, _, f in DESCRIPTIONS],
                         indirect=["folder"])
def test_a_damaged_description_is_one_line_naming_it(built, name, folder, file, damage):
    what = damage(folder / file)
    result = cli(*command(name, folder, built))
    assert_one_line_error(result, str(folder / file), what)


def test_model_yaml_sections_of_the_wrong_type_are_one_line(built, tmp_path):
    folder = tmp_path / "m_gpt"
    shutil.copytree(built / "m_gpt", folder)
    for text, fragment in [("format: taa.model/1\nmodel: [1, 2]\n", "model should be a mapping"),
                           ("format: taa.model/1\narchitecture: [GPT]\nmodel: {preset: gpt-tiny}\n",
                            "should be a class name")]:
        (folder / "model.yaml").write_text(text)
        assert_one_line_error(cli(*command("generate", folder, built)), str(folder / "model.yaml"), fragment)


# ------------------------------------------------------------------ damaged tokenizers

TOKENIZERS = [("translate", "tr", "tokenizer/subword_tokenizer.json"), ("translate", "tr", "tokenizer/tokenizer.json"),
              ("generate", "lm", "tokenizer/char_tokenizer.json"), ("classify", "cls", "tokenizer/tokenizer.json"),
              ("classify", "hf_cls", "tokenizer.json"), ("classify", "m_cls", "tokenizer/tokenizer.json"),
              ("from-hf", "hf_cls", "tokenizer.json")]


@pytest.mark.parametrize("damage", [not_utf8, not_a_mapping, no_text], ids=lambda f: f.__name__)
@pytest.mark.parametrize("name, folder, file", TOKENIZERS, ids=[f"{f}-{p}" for _, f, p in TOKENIZERS],
                         indirect=["folder"])
def test_a_damaged_tokenizer_file_is_one_line_naming_it(built, name, folder, file, damage):
    damage(folder / file)
    assert_one_line_error(cli(*command(name, folder, built)), str(folder / file))
    assert not (folder.parent / "converted").exists()  # checked before the conversion writes anything


@pytest.mark.parametrize("name, folder, file", [("translate", "tr", "subword_tokenizer.json"),
                                                 ("generate", "tr", "subword_tokenizer.json"),
                                                 ("generate", "lm", "char_tokenizer.json")], indirect=["folder"])
def test_a_tokenizer_folder_without_its_description_is_refused(built, name, folder, file):
    """Not read as something else: the translation run's BPE as a bare tokenizer.json, a
    language model's characters as no tokenizer at all (text as token ids)."""
    (folder / "tokenizer" / file).unlink()
    assert_one_line_error(cli(*command(name, folder, built)), str(folder / "tokenizer"))


# ------------------------------------------------------------------ train --resume

STATE_DAMAGE = [truncated, pickled, empty, random_bytes]


@pytest.mark.parametrize("damage", STATE_DAMAGE, ids=lambda f: f.__name__)
@pytest.mark.parametrize("file", ["state/model.safetensors", "state/optimizer.safetensors", "state/rng.safetensors"])
@pytest.mark.parametrize("folder", ["copy"], indirect=True)
def test_resume_from_damaged_state_is_one_line_naming_the_file(built, folder, file, damage):
    damage(folder / file)
    assert_one_line_error(cli(*command("resume", folder, built)), str(folder / file))


@pytest.mark.parametrize("damage", [not_utf8, syntax_error, no_text], ids=lambda f: f.__name__)
@pytest.mark.parametrize("folder", ["copy"], indirect=True)
def test_resume_from_a_damaged_trainer_json_is_one_line(built, folder, damage):
    what = damage(folder / "state" / "trainer.json")
    assert_one_line_error(cli(*command("resume", folder, built)), str(folder / "state" / "trainer.json"), what)


def _integers_instead(path):
    """The same tensor names and shapes, stored as integers."""
    save_file({key: value.to(torch.int32) for key, value in load_file(str(path)).items()}, str(path))


@pytest.mark.parametrize("file", ["state/model.safetensors", "state/rng.safetensors"])
@pytest.mark.parametrize("folder", ["copy"], indirect=True)
def test_resume_from_state_tensors_of_the_wrong_kind_is_one_line(built, folder, file):
    _integers_instead(folder / file)
    assert_one_line_error(cli(*command("resume", folder, built)), str(folder / "state"))


@pytest.mark.parametrize("folder", ["copy"], indirect=True)
def test_resume_from_optimizer_moments_stored_as_integers_is_one_line(built, folder):
    """torch would cast them back to floating point without a word."""
    path = folder / "state" / "optimizer.safetensors"
    _integers_instead(path)
    assert_one_line_error(cli(*command("resume", folder, built)), str(path), "tensors of the wrong kind",
                          "(expected floating point)")


@pytest.mark.parametrize("file, text", [("trainer.json", "[1, 2]"), ("optimizer.json", "[]")])
@pytest.mark.parametrize("folder", ["copy"], indirect=True)
def test_resume_from_state_json_of_the_wrong_shape_is_one_line(built, folder, file, text):
    (folder / "state" / file).write_text(text)
    assert_one_line_error(cli(*command("resume", folder, built)), str(folder / "state" / file),
                          "expected a JSON object")


@pytest.mark.parametrize("folder", ["copy"], indirect=True)
def test_resume_from_a_state_without_its_optimizer_settings_is_one_line(built, folder):
    (folder / "state" / "optimizer.json").unlink()
    assert_one_line_error(cli(*command("resume", folder, built)), str(folder / "state" / "optimizer.json"),
                          "no such file")
