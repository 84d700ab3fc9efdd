"""taa.text: one tokenizer loader for taa's own and Hugging Face tokenizers, encode/decode alike."""

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from taa.data.tokenizer import CharTokenizer, SubwordTokenizer, train_bpe
from taa.folders import CheckpointError
from taa.text import decode_tokens, encode_text, is_taa_tokenizer, load_tokenizer

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "dog", "runs", "fast"]


def hf_tokenizer_folder(folder, sentence_max_length=None):
    """A tiny WordLevel ``tokenizer.json`` whose post-processor adds BERT's [CLS] and [SEP]."""
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.enable_padding(length=12)  # as some saved files are: the loader switches it off
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    if sentence_max_length is not None:
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": sentence_max_length}))
    return folder


def test_taa_tokenizers_load_by_their_description(tmp_path):
    CharTokenizer.train("to be\n").save(tmp_path / "chars")
    SubwordTokenizer(train_bpe(["ein hund", "a dog"] * 5, 40, 1)).save(tmp_path / "bpe")
    assert is_taa_tokenizer(tmp_path / "chars") and is_taa_tokenizer(tmp_path / "bpe")
    assert isinstance(load_tokenizer(tmp_path / "chars"), CharTokenizer)
    assert isinstance(load_tokenizer(tmp_path / "bpe", max_length=3), SubwordTokenizer)  # no truncation to apply


def test_hugging_face_tokenizer_adds_its_specials_and_does_not_pad(tmp_path):
    tokenizer = load_tokenizer(hf_tokenizer_folder(tmp_path))
    assert not is_taa_tokenizer(tmp_path)
    assert tokenizer.encode("a dog runs").tokens == ["[CLS]", "a", "dog", "runs", "[SEP]"]
    assert load_tokenizer(tmp_path / "tokenizer.json").encode("a dog").ids == [2, 4, 5, 3]  # the file itself


def test_truncation_max_length_then_sentence_transformers_then_positions(tmp_path):
    long = " ".join(["dog"] * 20)
    plain = hf_tokenizer_folder(tmp_path / "plain")
    assert len(load_tokenizer(plain).encode(long).ids) == 22  # nothing says: no truncation
    assert len(load_tokenizer(plain, positions=8).encode(long).ids) == 8
    assert len(load_tokenizer(plain, 5, positions=8).encode(long).ids) == 5
    sentence = hf_tokenizer_folder(tmp_path / "sentence", sentence_max_length=6)
    assert len(load_tokenizer(sentence, positions=8).encode(long).ids) == 6
    encoding = load_tokenizer(sentence, 4).encode(long)
    assert encoding.tokens == ["[CLS]", "dog", "dog", "[SEP]"]  # [SEP] kept last


def test_sentence_transformers_module_folder(tmp_path):
    (tmp_path / "modules.json").write_text(
        '[{"idx": 0, "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"}]')
    hf_tokenizer_folder(tmp_path / "0_Transformer", sentence_max_length=3)
    assert load_tokenizer(tmp_path).encode("a dog runs").tokens == ["[CLS]", "a", "[SEP]"]


def test_no_tokenizer_and_bad_files_are_one_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"no tokenizer \(char_tokenizer.json, subword_tokenizer.json or "):
        load_tokenizer(tmp_path)
    assert load_tokenizer(tmp_path, required=False) is None
    assert load_tokenizer(tmp_path / "missing", required=False) is None
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer.json: not a tokenizers file"):
        load_tokenizer(tmp_path)
    (tmp_path / "char_tokenizer.json").write_text('{"format": "other/1", "characters": ["a"]}')
    with pytest.raises(CheckpointError, match="format 'other/1', expected 'taa.char_tokenizer/1'"):
        load_tokenizer(tmp_path)


def test_encode_and_decode_treat_every_tokenizer_alike(tmp_path):
    chars = CharTokenizer.train("to be or not\n")
    assert decode_tokens(chars, encode_text(chars, "not to be")) == "not to be"

    bpe = SubwordTokenizer(train_bpe(["ein hund läuft", "a dog runs"] * 5, 60, 1))
    assert encode_text(bpe, "a dog") == bpe.encode("a dog")  # a prompt: nothing added
    assert encode_text(bpe, "ein hund", source=True)[-1] == bpe.eos_id  # a source ends with </s>
    assert decode_tokens(bpe, [bpe.bos_id, *bpe.encode("a dog"), bpe.eos_id, 5], target=True) == "a dog"

    hf = load_tokenizer(hf_tokenizer_folder(tmp_path))
    assert encode_text(hf, "a dog") == [4, 5]  # a prompt: no [CLS]/[SEP]
    assert encode_text(hf, "a dog", source=True) == [2, 4, 5, 3]
    assert decode_tokens(hf, [2, 4, 5, 3]) == "a dog"
