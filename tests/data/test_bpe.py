"""The from-scratch BPE learner against the Rust ``tokenizers`` trainer: same merges, same order.

Both are configured alike: words are whitespace-separated pieces, no special
tokens, the same ``vocab_size`` (alphabet included) and ``min_frequency``. Ties
are resolved by vocabulary order in both (see ``taa.data.bpe``), so corpora full
of ties are a real test, not a lucky one.
"""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from taa.data.bpe import BytePairEncoding, learn_bpe
from taa.data.text import read_lines

# Sennrich et al.'s example dictionary {low: 5, lower: 2, newest: 6, widest: 3}, as text.
CLASSIC = ["low " * 5 + "lower " * 2, "newest " * 6 + "widest " * 3]


def fast_bpe(lines, vocab_size, min_frequency, end_of_word_suffix=None):
    """The ``tokenizers`` trainer, configured like ``learn_bpe``: (tokenizer, merges, vocab)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    options = {"end_of_word_suffix": end_of_word_suffix} if end_of_word_suffix else {}
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[], show_progress=False, **options
    )
    tokenizer.train_from_iterator(lines, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    vocab = sorted(model["vocab"], key=model["vocab"].get)
    return tokenizer, merges, vocab


def assert_same_as_tokenizers(lines, vocab_size, min_frequency, end_of_word_suffix=""):
    ours = learn_bpe(lines, vocab_size=vocab_size, min_frequency=min_frequency, end_of_word_suffix=end_of_word_suffix)
    tokenizer, merges, vocab = fast_bpe(lines, vocab_size, min_frequency, end_of_word_suffix)
    assert list(ours.merges) == merges
    assert ours.vocab == vocab
    for word in {w for line in lines for w in line.split()}:
        assert ours.encode(word) == [t.value for t in tokenizer.model.tokenize(word)], word
    return ours


def test_classic_example_learns_the_expected_merges():
    ours = assert_same_as_tokenizers(CLASSIC, vocab_size=100, min_frequency=2)
    assert ours.merges == (
        ("e", "s"), ("es", "t"), ("l", "o"), ("lo", "w"), ("e", "w"), ("n", "ew"),
        ("new", "est"), ("d", "est"), ("i", "dest"), ("w", "idest"), ("e", "r"), ("low", "er"),
    )  # fmt: skip
    assert ours.encode("lowest") == ["low", "est"]  # an unseen word, from learned pieces
    assert ours.encode("slow") == ["s", "low"]


def test_ties_go_to_the_pair_whose_symbols_came_first():
    # every pair occurs twice; "ab" wins over "ba", "cd", "dc" because "a" comes first
    ours = assert_same_as_tokenizers(["ab ab ba ba cd cd dc dc"], vocab_size=5, min_frequency=1)
    assert ours.merges == (("a", "b"),)
    # merged symbols come after the alphabet, whatever their spelling: ("a","b") then ("ab","a"),
    # not ("a","bc")-like string order
    assert_same_as_tokenizers(["aba aba zz zz bc bc"], vocab_size=20, min_frequency=1)


def test_min_frequency_and_num_merges_stop_learning():
    assert learn_bpe(["ab ab cd"], vocab_size=100, min_frequency=2).merges == (("a", "b"),)
    assert_same_as_tokenizers(["ab ab cd"], vocab_size=100, min_frequency=2)
    assert len(learn_bpe(CLASSIC, num_merges=3).merges) == 3
    assert learn_bpe(CLASSIC, num_merges=3).merges == learn_bpe(CLASSIC, vocab_size=len("delinorstw") + 3).merges


def test_end_of_word_suffix_tells_word_ends_apart():
    # every word ends in "t", so both learners give "t</w>" the same place in the vocabulary
    lines = ["best best best rest rest stat stat test"]
    ours = assert_same_as_tokenizers(lines, vocab_size=30, min_frequency=2, end_of_word_suffix="</w>")
    assert ours.encode("best") == ["best</w>"]
    assert "t</w>" in ours.alphabet and "t" in ours.alphabet
    assert ours.encode("stab")[0] == "st"  # "st" inside a word is not "st</w>"


def test_encode_applies_merges_in_rank_order():
    first_bc = BytePairEncoding(alphabet=("a", "b", "c"), merges=(("b", "c"), ("a", "b")))
    first_ab = BytePairEncoding(alphabet=("a", "b", "c"), merges=(("a", "b"), ("b", "c")))
    assert first_bc.encode("abc") == ["a", "bc"]
    assert first_ab.encode("abc") == ["ab", "c"]
    assert first_ab.encode("abab") == ["ab", "ab"]
    assert first_ab.encode("axb") == ["a", "x", "b"]  # unknown characters stay alone
    assert first_ab.encode("") == []


def test_exactly_one_stopping_rule():
    with pytest.raises(ValueError, match="exactly one of num_merges and vocab_size"):
        learn_bpe(CLASSIC)
    with pytest.raises(ValueError, match="exactly one"):
        learn_bpe(CLASSIC, num_merges=3, vocab_size=20)


words = st.text(alphabet="abcd", min_size=1, max_size=7)
corpora = st.lists(st.lists(words, min_size=1, max_size=6).map(" ".join), min_size=1, max_size=6)


@given(corpus=corpora, vocab_size=st.integers(2, 40), min_frequency=st.integers(0, 3))
def test_random_corpora_learn_what_tokenizers_learns(corpus, vocab_size, min_frequency):
    assert_same_as_tokenizers(corpus, vocab_size, min_frequency)


def test_real_sentences_learn_what_tokenizers_learns(data_dir):
    lines = read_lines(data_dir / "multi30k" / "val.en.gz")[:150]
    ours = assert_same_as_tokenizers(lines, vocab_size=250, min_frequency=2)
    assert len(ours.merges) > 150
