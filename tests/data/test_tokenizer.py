"""The subword tokenizer: special ids, what each side adds, exact round trips, JSON save/load."""

import json

import pytest

from taa.data.multi30k import load_multi30k
from taa.data.text import DataError
from taa.data.tokenizer import SubwordTokenizer

GERMAN = [
    "Ein Mann fährt Fahrrad.",
    "Zwei Hunde spielen im Schnee.",
    "Eine Frau  liest ein Buch.",  # two spaces, as in some Multi30k lines
    "Ein Junge springt über einen Zaun.",
    "Kinder spielen im Park.",
] * 4
ENGLISH = [
    "A man rides a bike.",
    "Two dogs play in the snow.",
    "A woman reads a book.",
    "A boy jumps over a fence.",
    "Children play in the park.",
] * 4


@pytest.fixture(scope="module", params=[True, False], ids=["joint", "separate"])
def small(request) -> SubwordTokenizer:
    return SubwordTokenizer.train(GERMAN, ENGLISH, vocab_size=80, joint=request.param, min_frequency=2)


@pytest.fixture(scope="module")
def multi30k_joint(data_dir) -> SubwordTokenizer:
    """The tokenizer of the Multi30k milestone: 8000 joint BPE symbols learned on train."""
    train = load_multi30k("train", data_dir=data_dir)
    return SubwordTokenizer.train([s for s, _ in train], [t for _, t in train], vocab_size=8000, joint=True)


def test_special_ids_are_fixed(small):
    assert (small.pad_id, small.bos_id, small.eos_id, small.unk_id) == (0, 1, 2, 3)
    for token, expected in zip(["<pad>", "<s>", "</s>", "<unk>"], range(4)):
        assert small.source.token_to_id(token) == expected
        assert small.target.token_to_id(token) == expected


def test_source_ends_with_eos_and_target_is_wrapped_for_the_decoder(small):
    source = small.encode_source("Ein Mann spielen.")
    target = small.encode_target("A man plays.")
    assert source[-1] == small.eos_id and small.bos_id not in source
    assert target[0] == small.bos_id and target[-1] == small.eos_id
    assert all(i > small.unk_id for i in source[:-1] + target[1:-1])  # no specials inside
    assert small.encode_pairs([("Ein Mann spielen.", "A man plays.")]) == [(source, target)]


def test_decode_drops_bos_stops_at_eos_and_ignores_padding(small):
    ids = small.encode_target("A man reads.")
    assert small.decode_target(ids) == "A man reads."
    generated = ids + [small.pad_id] * 3  # greedy decoding pads after </s>
    assert small.decode_target(generated) == "A man reads."
    assert small.decode_target(ids[:-1] + small.encode_target("junk")[1:]) == "A man reads. junk"
    assert small.decode_target(ids + small.encode_target("junk")[1:]) == "A man reads."
    assert small.decode_source(small.encode_source("Zwei  Hunde.")) == "Zwei  Hunde."


def test_case_is_kept(small):
    assert small.encode_target("A dog") != small.encode_target("a dog")
    assert small.decode_target(small.encode_target("Children A Two cAT")) == "Children A Two cAT"


def test_unknown_characters_become_unk_and_decode_drops_them(small):
    ids = small.encode_target("A dog 🐕.")
    assert small.unk_id in ids
    assert small.decode_target(ids) == "A dog ."


def test_joint_shares_one_vocabulary_and_separate_does_not():
    joint = SubwordTokenizer.train(GERMAN, ENGLISH, vocab_size=80, joint=True)
    separate = SubwordTokenizer.train(GERMAN, ENGLISH, vocab_size=80, joint=False)
    assert joint.joint and not separate.joint
    assert joint.encode_source("Two dogs") == joint.encode_target("Two dogs")[1:]
    assert "ä" in separate.source.get_vocab() and "ä" not in separate.target.get_vocab()
    assert separate.source_vocab_size <= 80 and separate.target_vocab_size <= 80
    with pytest.raises(ValueError, match="target_vocab_size needs joint=False"):
        SubwordTokenizer.train(GERMAN, ENGLISH, vocab_size=80, joint=True, target_vocab_size=60)
    sizes = SubwordTokenizer.train(GERMAN, ENGLISH, vocab_size=80, joint=False, target_vocab_size=50)
    assert sizes.target_vocab_size == 50 and sizes.source_vocab_size == 80


def test_save_and_load_round_trip_as_json_only(small, tmp_path):
    small.save(tmp_path / "tok")
    files = sorted(p.name for p in (tmp_path / "tok").iterdir())
    expected = ["subword_tokenizer.json", "tokenizer.json"] if small.joint else [
        "source_tokenizer.json", "subword_tokenizer.json", "target_tokenizer.json"]  # fmt: skip
    assert files == expected
    for name in files:
        json.loads((tmp_path / "tok" / name).read_text())  # every file is plain JSON
    loaded = SubwordTokenizer.load(tmp_path / "tok")
    assert loaded.joint == small.joint
    assert (loaded.source_vocab_size, loaded.target_vocab_size) == (small.source_vocab_size, small.target_vocab_size)
    for german, english in zip(GERMAN, ENGLISH):
        assert loaded.encode_source(german) == small.encode_source(german)
        assert loaded.encode_target(english) == small.encode_target(english)
        assert loaded.decode_target(loaded.encode_target(english)) == english


def test_load_names_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="not a saved SubwordTokenizer"):
        SubwordTokenizer.load(tmp_path)


def test_every_multi30k_val_sentence_round_trips(multi30k_joint, data_dir):
    """decode(encode(s)) == s, so BLEU is computed on the raw text. Every character of
    val occurs in train, so no sentence may need <unk> either."""
    tokenizer = multi30k_joint
    assert tokenizer.source_vocab_size == tokenizer.target_vocab_size == 8000
    val = load_multi30k("val", data_dir=data_dir)
    with_unk = [s for s, t in val if tokenizer.unk_id in tokenizer.encode_source(s) + tokenizer.encode_target(t)]
    failures = [
        text
        for source, target in val
        for text, decoded in (
            (source, tokenizer.decode_source(tokenizer.encode_source(source))),
            (target, tokenizer.decode_target(tokenizer.encode_target(target))),
        )
        if decoded != text
    ]
    assert with_unk == [] and failures == []
    # subwords per sentence, without the special tokens (words per sentence: de 11.4, en 12.0)
    encoded = tokenizer.encode_pairs(val)
    german = sum(len(s) - 1 for s, _ in encoded) / len(encoded)
    english = sum(len(t) - 2 for _, t in encoded) / len(encoded)
    assert 13 < german < 16 and 12.5 < english < 15


# ---------------------------------------------------------------- running text (language models)

SHAKESPEARE = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 5


def test_char_tokenizer_is_the_sorted_set_of_characters(tmp_path):
    from taa.data.tokenizer import CharTokenizer
    from taa.text import load_tokenizer

    tokenizer = CharTokenizer.train(SHAKESPEARE)
    assert tokenizer.characters == sorted(set(SHAKESPEARE)) and tokenizer.characters[0] == "\n"
    ids = tokenizer.encode("Speak, all.")
    assert ids == [tokenizer.characters.index(c) for c in "Speak, all."]
    assert tokenizer.decode(ids) == "Speak, all."
    with pytest.raises(DataError, match=r"character 'Z' is not in the vocabulary of"):
        tokenizer.encode("Zounds")
    tokenizer.save(tmp_path / "tok")
    assert [p.name for p in (tmp_path / "tok").iterdir()] == ["char_tokenizer.json"]
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, CharTokenizer) and loaded.characters == tokenizer.characters


def test_tiny_shakespeare_has_nanogpts_65_characters():
    import os
    from pathlib import Path

    from taa.data.tokenizer import CharTokenizer

    path = Path(os.environ.get("TAA_DATA", "/work/shared/data")) / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found (set TAA_DATA)")
    tokenizer = CharTokenizer.train(path.read_text(encoding="utf-8"))
    assert tokenizer.vocab_size == 65
    assert "".join(tokenizer.characters[:13]) == "\n !$&',-.3:;?"  # nanoGPT prints the same vocabulary


def test_byte_level_bpe_round_trips_running_text_exactly(tmp_path):
    from taa.data.tokenizer import train_bpe
    from taa.folders import CheckpointError
    from taa.text import load_tokenizer

    tokenizer = SubwordTokenizer(train_bpe([SHAKESPEARE], vocab_size=300, byte_level=True))
    ids = tokenizer.encode(SHAKESPEARE)
    assert tokenizer.unk_id not in ids and min(ids) > tokenizer.unk_id  # no specials are added
    assert len(ids) < len(SHAKESPEARE) / 2  # merges learned
    assert tokenizer.decode(ids) == SHAKESPEARE  # newlines and spaces survive
    unseen = "Zounds! 🐕 ünïcode\ttabs\n"
    assert tokenizer.decode(tokenizer.encode(unseen)) == unseen  # bytes: nothing is unknown
    tokenizer.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, SubwordTokenizer) and loaded.encode(SHAKESPEARE) == ids
    with pytest.raises(CheckpointError, match="no tokenizer"):
        load_tokenizer(tmp_path)


def test_extra_special_tokens_follow_the_fixed_four():
    from taa.data.tokenizer import train_bpe

    tokenizer = train_bpe([SHAKESPEARE], vocab_size=300, byte_level=True, extra_special_tokens=["<mask>"])
    assert tokenizer.token_to_id("<mask>") == 4 and tokenizer.token_to_id("</s>") == 2
    assert 4 not in tokenizer.encode(SHAKESPEARE, add_special_tokens=False).ids
    with pytest.raises(ValueError, match="exceed the 5 special tokens"):
        train_bpe([SHAKESPEARE], vocab_size=5, extra_special_tokens=["<mask>"])
