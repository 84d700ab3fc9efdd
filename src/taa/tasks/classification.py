"""Sentence classification: fine-tune a pre-trained BERT on GLUE SST-2 (or any sentence/label TSV).

Devlin et al. 2019, §4.1 (GLUE): "we represent the input sequence [...] as described
in Section 3, and use the final hidden vector C corresponding to the first input token
([CLS]) as the aggregate representation. The only new parameters introduced during
fine-tuning are classification layer weights W [...] We compute a standard
classification loss with C and W, i.e., log(softmax(C W^T))." They fine-tune with
batch 32 for 3 epochs, learning rates of 5e-5 to 2e-5, linear decay after warm-up,
dropout 0.1 (§A.3).

Pipeline:

1. read ``sentence<TAB>label`` rows (``sst2/train.tsv`` and ``sst2/dev.tsv``);
2. tokenize with the pre-trained folder's WordPiece tokenizer (``[CLS] ... [SEP]``,
   truncated to ``max_length``);
3. load the backbone weights (e.g. all-MiniLM-L6-v2, an installed package) into
   :class:`BertForSequenceClassification`; the classifier starts new, N(0, 0.02);
4. batches of ``batch_size`` sentences of similar length ("sortish": sorted within
   random pools), padded to their longest sentence only, with an attention mask;
5. validate the accuracy on the dev set (``val_accuracy``), keep the best weights.

The run folder holds ``tokenizer/tokenizer.json`` next to the weights, so
:func:`load_classifier` restores both.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from tokenizers import Tokenizer
from torch import Tensor, nn

from taa import config as cfg
from taa.data.batching import SortishBatcher, pad
from taa.data.sst2 import LABEL_NAMES as SST2_LABELS
from taa.data.sst2 import read_labelled_file, read_labelled_sentences, sst2_path
from taa.data.text import DataError
from taa.folders import HF_CONFIG, HF_TOKENIZER, CheckpointError, read_json
from taa.tasks.runner import Task, run_function
from taa.text import load_tokenizer
from taa.torch.devices import model_device
from taa.torch.hub import Pretrained, load_run
from taa.torch.models.bert import BertForSequenceClassification
from taa.torch.training import TrainResult
from taa.torch.devices import to_device
from taa.torch.training.loop import autocast
from taa.torch.training.losses import label_smoothed_cross_entropy

# Hyper-parameters that differ between pre-training and fine-tuning; every other field of
# the model section must equal the pre-trained folder's config.
FINE_TUNING_FIELDS = ("dropout", "attention_dropout", "classifier_dropout", "classifier_pooling", "feed_forward_dropout",
                      "num_labels", "init_std", "attention")

# ------------------------------------------------------------------ the pre-trained folder and its tokenizer


def resolve_folder(name: str) -> Path:
    """A folder path as it is, or an installed package's ``model/`` folder (found with importlib)."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    spec = importlib.util.find_spec(name) if name.isidentifier() else None
    if spec is not None and spec.origin is not None and (Path(spec.origin).parent / "model").is_dir():
        return Path(spec.origin).parent / "model"
    raise DataError(f"{name}: no such folder or installed package with a model/ folder")


def load_pretrained(folder: Path, model_config: cfg.BertConfig) -> BertForSequenceClassification:
    """The folder's BERT backbone in a sequence classifier of ``model_config``; a new classifier head."""
    from taa.torch.convert.hf import load_hf_folder

    backbone = load_hf_folder(folder, architecture="BertModel")  # a bad folder: one CheckpointError line
    differing = [
        f"model.{f.name}={getattr(model_config, f.name)!r} but the folder has {getattr(backbone.config, f.name)!r}"
        for f in dataclasses.fields(cfg.BertConfig)
        if f.name not in FINE_TUNING_FIELDS and getattr(model_config, f.name) != getattr(backbone.config, f.name)
    ]
    if differing:
        raise cfg.ConfigError(f"data.pretrained={folder}: {'; '.join(differing)}")
    model = BertForSequenceClassification(model_config)
    missing, unexpected = model.bert.load_state_dict(backbone.state_dict(), strict=False)
    if unexpected or any(not key.startswith("pooler.") for key in missing):  # a folder without a pooler: new one
        raise CheckpointError(f"{folder}: weights do not fit: missing {missing}, unexpected {unexpected}")
    return model


# ------------------------------------------------------------------ data


def load_rows(task: cfg.ClassificationTaskConfig, split: str, num_labels: int) -> list[tuple[str, int]]:
    """(sentence, label) rows of "train" or "valid", from the task's files or SST-2."""
    file = {"train": task.train_file, "valid": task.valid_file}[split]
    limit = {"train": task.max_train_examples, "valid": task.max_valid_examples}[split]
    path = Path(file) if file else sst2_path({"train": "train", "valid": "dev"}[split], task.dir)
    rows = read_labelled_sentences(path, num_labels)
    return rows[:limit] if limit else rows


@dataclass
class ClassificationBatch:
    input_ids: Tensor  # (b, n), padded to the longest sentence of the batch
    attention_mask: Tensor  # (b, n), 1 at real tokens
    labels: Tensor  # (b,)


def to_batch(encoded: Sequence[list[int]], labels: Sequence[int], pad_id: int) -> ClassificationBatch:
    """Token ids of a few sentences -> a padded batch with its attention mask."""
    input_ids = torch.from_numpy(pad(encoded, pad_id))  # (b, n)
    lengths = torch.tensor([len(ids) for ids in encoded])  # (b,)
    attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()  # (b, n)
    return ClassificationBatch(input_ids, attention_mask, torch.tensor(list(labels)))


class ClassificationBatches:
    """Endless, resumable sortish batches of ``batch_size`` sentences; ``tokens`` counts the
    sentences' tokens (padding left out) yielded so far."""

    def __init__(self, encoded: list[list[int]], labels: list[int], batch_size: int, seed: int, pool: int,
                 pad_id: int) -> None:
        self.encoded, self.labels, self.pad_id = encoded, labels, pad_id
        self.batcher = SortishBatcher([len(ids) for ids in encoded], batch_size, seed, pool)
        self.epoch, self.position = 0, 0  # the next batch to yield
        self.tokens = 0

    def __iter__(self) -> ClassificationBatches:
        return self

    def __next__(self) -> ClassificationBatch:
        batches = self.batcher.epoch_batches(self.epoch)
        if self.position >= len(batches):
            self.epoch, self.position = self.epoch + 1, 0
            batches = self.batcher.epoch_batches(self.epoch)
        indices = batches[self.position]
        self.position += 1
        self.tokens += sum(len(self.encoded[i]) for i in indices)
        return to_batch([self.encoded[i] for i in indices], [self.labels[i] for i in indices], self.pad_id)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "tokens": self.tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position, self.tokens = state["epoch"], state["position"], state.get("tokens", 0)


def classification_loss(smoothing: float = 0.0):
    """Summed cross-entropy over the sentences of a batch and their number."""

    def compute_loss(model: nn.Module, batch: ClassificationBatch) -> tuple[Tensor, Tensor]:
        logits = model(batch.input_ids, batch.attention_mask)  # (b, c)
        return label_smoothed_cross_entropy(logits[:, None, :], batch.labels[:, None], smoothing)

    return compute_loss


@torch.no_grad()
def evaluate_classifier(model: nn.Module, encoded: list[list[int]], labels: list[int], batch_size: int,
                        pad_id: int, dtype: str = "float32", *, confusion: bool = False) -> dict[str, Any]:
    """Accuracy and mean cross-entropy over every sentence, in length-sorted batches;
    ``confusion``: also the confusion matrix, ``confusion[true][predicted]`` sentences.
    A port's model (Keras, Flax: not a torch module) is scored alike in float32
    (:func:`_evaluate_classifier_port`)."""
    if not isinstance(model, nn.Module):
        return _evaluate_classifier_port(model, encoded, labels, batch_size, pad_id, confusion=confusion)
    model.eval()
    total = 0.0
    device = model_device(model)
    counts = torch.zeros(model.config.num_labels, model.config.num_labels, dtype=torch.long, device=device)  # (c, c)
    batcher = SortishBatcher([len(ids) for ids in encoded], batch_size, shuffle=False)
    with autocast(dtype, device):
        for indices in batcher.epoch_batches(0):
            batch = to_device(to_batch([encoded[i] for i in indices], [labels[i] for i in indices], pad_id), device)
            logits = model(batch.input_ids, batch.attention_mask).float()  # (b, c)
            loss, _ = label_smoothed_cross_entropy(logits[:, None, :], batch.labels[:, None])
            total += float(loss)
            counts.index_put_((batch.labels, logits.argmax(dim=-1)), torch.ones_like(batch.labels), accumulate=True)
    result: dict[str, Any] = {"val_accuracy": int(counts.trace()) / len(encoded), "val_loss": total / len(encoded)}
    if confusion:
        result["confusion"] = counts.tolist()
    return result


def _evaluate_classifier_port(model: Any, encoded: list[list[int]], labels: list[int], batch_size: int,
                              pad_id: int, *, confusion: bool = False) -> dict[str, Any]:
    """:func:`evaluate_classifier` of a port's classifier, called as torch's is
    (``model(input_ids, attention_mask)`` -> logits (b, c)), the loss computed in numpy."""
    import numpy as np

    classes = model.config.num_labels
    counts = np.zeros((classes, classes), dtype=np.int64)  # (c, c)
    total = 0.0
    batcher = SortishBatcher([len(ids) for ids in encoded], batch_size, shuffle=False)
    for indices in batcher.epoch_batches(0):
        rows = [encoded[i] for i in indices]
        input_ids = pad(rows, pad_id).astype(np.int32)  # (b, n)
        attention_mask = (np.arange(input_ids.shape[1]) < np.array([len(r) for r in rows])[:, None]).astype(np.int32)
        logits = np.asarray(model(input_ids, attention_mask), dtype=np.float64)  # (b, c)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        truth = np.array([labels[i] for i in indices])
        total += float(-log_probs[np.arange(len(truth)), truth].sum())
        np.add.at(counts, (truth, logits.argmax(axis=-1)), 1)
    result: dict[str, Any] = {"val_accuracy": int(np.trace(counts)) / len(encoded), "val_loss": total / len(encoded)}
    if confusion:
        result["confusion"] = counts.tolist()
    return result


# ------------------------------------------------------------------ the task


class ClassificationTask(Task):
    """Labelled sentences, a pre-trained WordPiece tokenizer and (usually) pre-trained BERT
    weights, sortish batches; the dev set's accuracy and loss while training."""

    example_preset = "bert-minilm-l6"
    rate_unit = "sent"  # the loss counts sentences

    def check(self) -> None:
        task, model = self.recipe.data, self.recipe.model
        if task.max_length > model.max_length:
            raise cfg.ConfigError(f"data.max_length={task.max_length} exceeds model.max_length={model.max_length}")
        if task.label_names and len(task.label_names) != model.num_labels:
            raise cfg.ConfigError(f"data.label_names has {len(task.label_names)} names for "
                                  f"model.num_labels={model.num_labels}")

    def read_data(self) -> None:
        task, num_labels = self.recipe.data, self.recipe.model.num_labels
        self.train_rows, self.valid_rows = load_rows(task, "train", num_labels), load_rows(task, "valid", num_labels)
        self.pretrained = resolve_folder(task.pretrained) if task.pretrained else None

    def new_tokenizer(self) -> Tokenizer:
        task = self.recipe.data
        return load_tokenizer(resolve_folder(task.tokenizer) if task.tokenizer else self.pretrained, task.max_length)

    def load_tokenizer(self, folder: Path) -> Tokenizer:
        return load_tokenizer(folder, self.recipe.data.max_length)

    def save_tokenizer(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(folder / HF_TOKENIZER))

    def model_config(self) -> cfg.BertConfig:
        """From scratch, the vocabulary and padding follow the tokenizer; pre-trained, the recipe's."""
        if self.pretrained is not None:
            return self.recipe.model
        pad_id = self.tokenizer.token_to_id("[PAD]")
        pad_id = self.recipe.model.pad_id if pad_id is None else pad_id
        return dataclasses.replace(self.recipe.model, vocab_size=self.tokenizer.get_vocab_size(), pad_id=pad_id)

    def encode(self) -> None:
        def encode(rows: list[tuple[str, int]]) -> list[list[int]]:
            return [e.ids for e in self.tokenizer.encode_batch([sentence for sentence, _ in rows])]

        self.train_encoded, self.valid_encoded = encode(self.train_rows), encode(self.valid_rows)
        self.valid_labels = [label for _, label in self.valid_rows]

    def new_model(self, resuming: bool) -> Optional[BertForSequenceClassification]:
        """The pre-trained backbone with a new head; resumed, the state folder holds the weights."""
        if self.pretrained is None or resuming:
            return None
        return load_pretrained(self.pretrained, self.recipe.model)

    def batches(self) -> ClassificationBatches:
        task, train = self.recipe.data, self.recipe.train
        self.train_batches = ClassificationBatches(
            self.train_encoded, [label for _, label in self.train_rows], train.batch_size, train.seed, task.pool,
            self.recipe.model.pad_id,
        )
        return self.train_batches

    def loss(self):
        return classification_loss(self.recipe.train.label_smoothing)

    def validation_metrics(self) -> dict[str, str]:
        return {"val_loss": "min", "val_accuracy": "max"}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate_classifier(model, self.valid_encoded, self.valid_labels, self.recipe.data.eval_batch_size,
                                   self.recipe.model.pad_id, self.recipe.train.dtype)

    def final_metrics(self, model: nn.Module, result: TrainResult) -> dict[str, Any]:
        train = self.recipe.train
        return {
            "train_examples": len(self.train_rows),
            "valid_examples": len(self.valid_rows),
            "epochs": result.steps * train.batch_size * train.grad_accumulation / len(self.train_rows),
            "sentences_per_second": result.tokens_per_second,  # what the trainer's rate counts here
        }

    def tokens_per_second(self, result: TrainResult) -> float:
        """The sentences' tokens (padding left out) the model read per second."""
        return self.train_batches.tokens / result.seconds if result.seconds else 0.0


run = run_function(ClassificationTask)


# ------------------------------------------------------------------ loading a trained model


def load_classifier(directory: str | Path) -> tuple[BertForSequenceClassification, Tokenizer, cfg.RecipeConfig]:
    """A trained classification checkpoint folder -> (model in eval mode, tokenizer, recipe)."""
    return load_run(directory, "classification")


@torch.no_grad()
def probabilities(model: BertForSequenceClassification, tokenizer: Tokenizer, sentences: Sequence[str],
                  batch_size: int = 32) -> list[list[float]]:
    """softmax over the labels, per sentence (in their order), in length-sorted batches."""
    model.eval()
    encoded = [e.ids for e in tokenizer.encode_batch(list(sentences))]
    rows: list[list[float]] = [[] for _ in encoded]
    if not encoded:
        return rows
    for indices in SortishBatcher([len(ids) for ids in encoded], batch_size, shuffle=False).epoch_batches(0):
        batch = to_device(to_batch([encoded[i] for i in indices], [0] * len(indices), model.config.pad_id),
                          model_device(model))
        logits = model(batch.input_ids, batch.attention_mask).float()  # (b, c)
        for i, row in zip(indices, logits.softmax(dim=-1).tolist()):
            rows[i] = row
    return rows


def classify(model: BertForSequenceClassification, tokenizer: Tokenizer, sentences: Sequence[str]) -> list[int]:
    """The predicted label of each sentence."""
    return [max(range(len(row)), key=row.__getitem__) for row in probabilities(model, tokenizer, sentences)]


def label_names(pretrained: Any) -> Optional[list[str]]:
    """The names of labels 0, 1, ... of a loaded classifier (what ``from_pretrained`` returns):
    a run's ``data.label_names``, else SST-2's when it trained on SST-2; a Hugging Face folder's
    ``id2label`` unless those are transformers' made-up ``LABEL_i``; else None (the ids)."""
    recipe, num_labels = pretrained.recipe, pretrained.config.num_labels
    if recipe is not None:
        if recipe.data.label_names:
            return list(recipe.data.label_names)
        reads_sst2 = not (recipe.data.train_file or recipe.data.valid_file)
        return list(SST2_LABELS) if reads_sst2 and num_labels == len(SST2_LABELS) else None
    return hf_label_names(pretrained.folder, num_labels)


def hf_label_names(folder: str | Path, num_labels: int) -> Optional[list[str]]:
    """The names a Hugging Face folder's ``config.json`` gives labels 0, 1, ... in ``id2label``;
    None when it has none for each label, or only transformers' made-up ``LABEL_i``."""
    path = Path(folder) / HF_CONFIG
    stored = read_json(path).get("id2label") if path.is_file() else None
    if not isinstance(stored, dict) or len(stored) != num_labels:
        return None
    names = [str(stored.get(str(i), "")) for i in range(num_labels)]
    return None if names == [f"LABEL_{i}" for i in range(num_labels)] or not all(names) else names


def score_file(pretrained: Pretrained, path: str | Path) -> dict[str, Any]:
    """``taa evaluate --data``: a loaded classifier's accuracy, mean loss and per-label
    precision, recall and F1 on a labelled file (:func:`taa.data.sst2.read_labelled_file`)."""
    config, names = pretrained.config, label_names(pretrained)
    if not hasattr(pretrained.tokenizer, "encode_batch"):
        raise CheckpointError(f"{pretrained.folder}: no Hugging Face tokenizer (tokenizer.json) to read sentences")
    rows = read_labelled_file(path, config.num_labels, names or ())
    encoded = [e.ids for e in pretrained.tokenizer.encode_batch([sentence for sentence, _ in rows])]
    batch_size = pretrained.recipe.data.eval_batch_size if pretrained.recipe is not None else 128
    figures = evaluate_classifier(pretrained.model, encoded, [label for _, label in rows], batch_size, config.pad_id,
                                  confusion=True)
    confusion = figures["confusion"]  # [true][predicted]
    classes = {}
    for label, name in enumerate(names or range(config.num_labels)):
        correct, sentences = confusion[label][label], sum(confusion[label])
        predicted = sum(row[label] for row in confusion)
        precision = correct / predicted if predicted else 0.0
        recall = correct / sentences if sentences else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        classes[str(name)] = {"sentences": sentences, "precision": precision, "recall": recall, "f1": f1}
    correct = sum(confusion[label][label] for label in range(config.num_labels))
    return {"task": "classification", "sentences": len(rows), "correct": correct, "accuracy": figures["val_accuracy"],
            "loss": figures["val_loss"], "classes": classes}
