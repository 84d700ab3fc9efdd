"""Every tensor follows the model's device: no mask, cache, position or beam book made on the CPU
while the model sits elsewhere.

Without a GPU two checks stand in for one:

- the models on PyTorch's ``meta`` device (shapes, no data): a forward and a backward pass,
  and the KV-cached decoding steps, fail when any tensor they make lands on the CPU (made
  without ``device=``, or moved with ``.cpu()``);
- the decoding loops need real numbers (when every row has ended, the beams' scores), so
  they run with the model on the CPU and ``meta`` as the default device: a tensor made
  without ``device=`` then lands on ``meta`` and the decoding fails.

``benchmarks/device_check.py`` runs the same models on a real GPU against the CPU.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from taa.config import preset
from taa.decoding import DecodingConfig
from taa.torch.decoding_steps import DecoderOnlySteps, EncoderDecoderSteps
from taa.torch.generate import decode
from taa.torch.hub import build_model
from taa.torch.models.bert import sentence_embeddings

pytestmark = pytest.mark.usefixtures("single_thread")

META = torch.device("meta")

# (preset, class, config fields): every family and every kind of position
MODELS = [
    ("vaswani-tiny", None, {}),
    ("vaswani-tiny", None, {"positional": "learned"}),
    ("vaswani-tiny", None, {"positional": "rotary"}),
    ("vaswani-tiny", None, {"positional": "relative"}),
    ("gpt-tiny", None, {}),
    ("gpt-tiny", None, {"positional": "rotary"}),
    ("gpt-tiny", None, {"positional": "alibi"}),
    ("bert-tiny", "BertModel", {}),
    ("bert-tiny", "BertForMaskedLM", {}),
    ("bert-tiny", "BertForSequenceClassification", {}),
    ("t5-tiny", None, {}),
    ("t5-v1_1-tiny", None, {}),
]


def _model(name: str, architecture, fields: dict):
    torch.manual_seed(0)
    return build_model(preset(name, **fields), architecture)


def _forward(model, name: str, ids: torch.Tensor) -> torch.Tensor:
    """The model's training-time forward pass on ``ids`` (b, n)."""
    if name == "vaswani-tiny":
        return model(ids, ids)
    if name.startswith("t5"):
        return model(ids, ids, attention_mask=torch.ones_like(ids, dtype=torch.bool))
    return model(ids)  # GPT, BERT (every token real)


@pytest.mark.parametrize("name, architecture, fields", MODELS)
def test_forward_and_backward_stay_on_the_models_device(name: str, architecture, fields: dict) -> None:
    model = _model(name, architecture, fields).to(META).train()
    ids = torch.randint(4, 40, (2, 7)).to(META)
    output = _forward(model, name, ids)
    output = output[0] if isinstance(output, tuple) else output
    assert output.device == META
    output.float().square().sum().backward()
    assert all(p.grad is None or p.grad.device == META for p in model.parameters())
    assert any(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name, fields", [(n, f) for n, a, f in MODELS if n in ("vaswani-tiny", "t5-tiny")])
def test_encoder_decoder_steps_stay_on_the_models_device(name: str, fields: dict) -> None:
    model = _model(name, None, fields).to(META).eval()
    source = torch.randint(4, 40, (2, 5)).to(META)
    with torch.inference_mode():
        steps = EncoderDecoderSteps(model, source, start_id=1, source_padding=torch.ones_like(source).bool())
        steps.repeat_rows(3)  # beam search's rows
        first = steps.next_logits(None)
        steps.follow(torch.tensor([0, 0, 1, 3, 4, 5]).to(META), sentences_left=False)
        second = steps.next_logits(first.argmax(dim=-1))
        steps.follow(torch.tensor([3, 4, 5]).to(META), sentences_left=True)  # a sentence left
        third = steps.next_logits(second[3:].argmax(dim=-1))
    assert {first.device, second.device, third.device} == {META} and third.shape[0] == 3


@pytest.mark.parametrize("fields", [f for n, a, f in MODELS if n == "gpt-tiny"])
def test_decoder_only_steps_stay_on_the_models_device(fields: dict) -> None:
    model = _model("gpt-tiny", None, fields).to(META).eval()
    prompt = torch.randint(4, 40, (2, 4)).to(META)
    with torch.inference_mode():
        steps = DecoderOnlySteps(model, prompt, None, max_new_tokens=5)
        steps.repeat_rows(2)
        logits = steps.next_logits(None)
        for _ in range(3):
            steps.follow(torch.tensor([1, 0, 3, 2]).to(META), sentences_left=False)
            logits = steps.next_logits(logits.argmax(dim=-1))
    assert logits.device == META and logits.shape[0] == 4


SETTINGS = {
    "greedy": DecodingConfig(),
    "sampling": DecodingConfig(sample=True, temperature=0.7, top_k=5, top_p=0.9, seed=3),
    "beam": DecodingConfig(beam=3, length_penalty=0.6),
}


@pytest.mark.parametrize("how", list(SETTINGS))
@pytest.mark.parametrize("name, fields", [
    ("vaswani-tiny", {}), ("vaswani-tiny", {"positional": "relative"}), ("t5-tiny", {}),
    ("gpt-tiny", {}), ("gpt-tiny", {"positional": "alibi"}), ("gpt-tiny", {"positional": "rotary"}),
])
def test_decoding_makes_no_tensor_off_the_models_device(name: str, fields: dict, how: str) -> None:
    model = _model(name, None, fields).eval()
    settings = SETTINGS[how]
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
    cases = [(ids, None, 6)]
    if name == "gpt-tiny":  # a left-padded prompt, and a prompt past the context (greedy and sampling slide)
        cases.append((ids, torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]), 6))
        if how != "beam":
            cases.append((ids, None, 64))
    for input_ids, attention_mask, new_tokens in cases:
        expected = decode(model, input_ids, attention_mask, settings, max_new_tokens=new_tokens, end_id=3)
        with torch.device(META):  # a tensor made without device= lands on meta and fails
            decoded = decode(model, input_ids, attention_mask, settings, max_new_tokens=new_tokens, end_id=3)
        assert decoded.tokens.device.type == "cpu"
        assert torch.equal(decoded.tokens, expected.tokens)


def test_sentence_embeddings_batch_on_the_models_device_and_answer_on_the_cpu() -> None:
    model = _model("bert-tiny", "BertModel", {}).eval()

    def encoding(ids: list[int]) -> SimpleNamespace:
        return SimpleNamespace(ids=ids, type_ids=[0] * len(ids), attention_mask=[1] * len(ids))

    tokenizer = SimpleNamespace(encode_batch=lambda sentences: [encoding([2] + [5 + len(s)] * len(s) + [3])
                                                                for s in sentences])
    sentences = ["ab", "abcd", "a"]
    expected = sentence_embeddings(model, tokenizer, sentences, batch_size=2)
    with torch.device(META):
        found = sentence_embeddings(model, tokenizer, sentences, batch_size=2)
    assert found.device.type == "cpu"
    torch.testing.assert_close(found, expected)
