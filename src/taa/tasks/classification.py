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
from taa.data.sst2 import read_labelled_sentences, sst2_path
from taa.data.text import DataError
from taa.tasks import require_model_config
from taa.tasks.common import save_run, selected_metrics, training_metrics
from taa.torch.models.bert import BertForSequenceClassification
from taa.torch.training import Trainer, seed_everything
from taa.torch.training.checkpoint import find_state_folder, load_recipe, load_weights
from taa.torch.training.loop import autocast
from taa.torch.training.losses import label_smoothed_cross_entropy
from taa.tracking import Tracker, flatten_params

TOKENIZER = "tokenizer"
TOKENIZER_FILE = "tokenizer.json"
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


def load_tokenizer(source: str | Path, max_length: int) -> Tokenizer:
    """A ``tokenizer.json`` (or a folder holding one) that adds [CLS]/[SEP]; truncating, not padding."""
    path = Path(source)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise DataError(f"{path}: no such file (a tokenizer.json)")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()  # batches pad themselves, to their longest sentence
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def load_pretrained(folder: Path, model_config: cfg.BertConfig) -> BertForSequenceClassification:
    """The folder's BERT backbone in a sequence classifier of ``model_config``; a new classifier head."""
    from taa.convert.hf_bert import load_hf_folder
    from taa.convert.state_dict import ConversionError

    try:
        backbone = load_hf_folder(folder, architecture="BertModel")
    except ConversionError as error:
        raise cfg.ConfigError(str(error)) from None
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
        raise cfg.ConfigError(f"{folder}: weights do not fit: missing {missing}, unexpected {unexpected}")
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
    """Endless, resumable sortish batches of ``batch_size`` sentences."""

    def __init__(self, encoded: list[list[int]], labels: list[int], batch_size: int, seed: int, pool: int,
                 pad_id: int) -> None:
        self.encoded, self.labels, self.pad_id = encoded, labels, pad_id
        self.batcher = SortishBatcher([len(ids) for ids in encoded], batch_size, seed, pool)
        self.epoch, self.position = 0, 0  # the next batch to yield

    def __iter__(self) -> ClassificationBatches:
        return self

    def __next__(self) -> ClassificationBatch:
        batches = self.batcher.epoch_batches(self.epoch)
        if self.position >= len(batches):
            self.epoch, self.position = self.epoch + 1, 0
            batches = self.batcher.epoch_batches(self.epoch)
        indices = batches[self.position]
        self.position += 1
        return to_batch([self.encoded[i] for i in indices], [self.labels[i] for i in indices], self.pad_id)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


def classification_loss(smoothing: float = 0.0):
    """Summed cross-entropy over the sentences of a batch and their number."""

    def compute_loss(model: nn.Module, batch: ClassificationBatch) -> tuple[Tensor, Tensor]:
        logits = model(batch.input_ids, batch.attention_mask)  # (b, c)
        return label_smoothed_cross_entropy(logits[:, None, :], batch.labels[:, None], smoothing)

    return compute_loss


@torch.no_grad()
def evaluate_classifier(model: nn.Module, encoded: list[list[int]], labels: list[int], batch_size: int,
                        pad_id: int, dtype: str = "float32") -> dict[str, float]:
    """Accuracy and mean cross-entropy over every sentence, in length-sorted batches."""
    model.eval()
    total, correct = 0.0, 0
    batcher = SortishBatcher([len(ids) for ids in encoded], batch_size, shuffle=False)
    with autocast(dtype, next(model.parameters()).device):
        for indices in batcher.epoch_batches(0):
            batch = to_batch([encoded[i] for i in indices], [labels[i] for i in indices], pad_id)
            logits = model(batch.input_ids, batch.attention_mask).float()  # (b, c)
            loss, _ = label_smoothed_cross_entropy(logits[:, None, :], batch.labels[:, None])
            total += float(loss)
            correct += int((logits.argmax(dim=-1) == batch.labels).sum())
    return {"val_accuracy": correct / len(encoded), "val_loss": total / len(encoded)}


# ------------------------------------------------------------------ the run


def run(
    recipe: cfg.RecipeConfig,
    out: Optional[str | Path] = None,
    progress: bool = True,
    resume: Optional[str | Path] = None,
    tracker: Optional[Tracker] = None,
) -> dict[str, Any]:
    """Fine-tune (or train) a BERT sentence classifier; write the checkpoint folder ``out``."""
    require_model_config(recipe, cfg.BertConfig, "bert-minilm-l6")
    task, train = recipe.data, recipe.train
    tracker = tracker or Tracker()
    seed_everything(train.seed)
    num_labels = recipe.model.num_labels
    train_rows, valid_rows = load_rows(task, "train", num_labels), load_rows(task, "valid", num_labels)
    pretrained = resolve_folder(task.pretrained) if task.pretrained else None
    if resume is not None:
        tokenizer_source: str | Path = find_state_folder(resume) / TOKENIZER
    else:
        tokenizer_source = resolve_folder(task.tokenizer) if task.tokenizer else pretrained
    tokenizer = load_tokenizer(tokenizer_source, task.max_length)
    if pretrained is None:  # from scratch: the vocabulary and padding follow the tokenizer
        pad_id = tokenizer.token_to_id("[PAD]")
        pad_id = recipe.model.pad_id if pad_id is None else pad_id
        model_config = dataclasses.replace(recipe.model, vocab_size=tokenizer.get_vocab_size(), pad_id=pad_id)
        recipe = dataclasses.replace(recipe, model=model_config)
    if task.max_length > recipe.model.max_length:
        raise cfg.ConfigError(f"data.max_length={task.max_length} exceeds model.max_length={recipe.model.max_length}")
    if pretrained is not None and resume is None:
        model = load_pretrained(pretrained, recipe.model)
    else:  # from scratch, or resumed: the state folder holds the weights
        model = BertForSequenceClassification(recipe.model)
    tracker.log_params(flatten_params(recipe))
    pad_id = recipe.model.pad_id

    def encode(rows: list[tuple[str, int]]) -> list[list[int]]:
        return [e.ids for e in tokenizer.encode_batch([sentence for sentence, _ in rows])]

    train_encoded, valid_encoded = encode(train_rows), encode(valid_rows)
    valid_labels = [label for _, label in valid_rows]

    def evaluate(model: nn.Module) -> dict[str, float]:
        return evaluate_classifier(model, valid_encoded, valid_labels, task.eval_batch_size, pad_id, train.dtype)

    def write_tokenizer(folder: Path) -> None:
        (folder / TOKENIZER).mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(folder / TOKENIZER / TOKENIZER_FILE))

    batches = ClassificationBatches(
        train_encoded, [label for _, label in train_rows], train.batch_size, train.seed, task.pool, pad_id,
    )
    trainer = Trainer(
        model, train, classification_loss(train.label_smoothing), batches,
        d_model=recipe.model.d_model, evaluate=evaluate, out=out, tracker=tracker, progress=progress,
        write_extra=write_tokenizer, rate_unit="sent",
    )
    if resume is not None:
        trainer.load_state(Path(resume))
    result = trainer.fit()
    metrics = {
        **selected_metrics(trainer, result),
        **training_metrics(result, trainer, model),
        "train_examples": len(train_rows),
        "valid_examples": len(valid_rows),
        "epochs": result.steps * train.batch_size * train.grad_accumulation / len(train_rows),
    }
    # The trainer's speed counts the loss's targets: here one label per sentence.
    metrics["sentences_per_second"] = metrics.pop("tokens_per_second")
    save_run(out, model, recipe, metrics, result, tracker, write_extra=write_tokenizer, artifacts=(TOKENIZER,))
    return {"model": model, "tokenizer": tokenizer, "metrics": metrics, "result": result}


# ------------------------------------------------------------------ loading a trained model


def load_classifier(directory: str | Path) -> tuple[BertForSequenceClassification, Tokenizer, cfg.RecipeConfig]:
    """A trained classification checkpoint folder -> (model in eval mode, tokenizer, recipe)."""
    directory = Path(directory)
    recipe = load_recipe(directory)
    if recipe.task != "classification":
        raise cfg.ConfigError(f"{directory}: a {recipe.task!r} checkpoint, not a sentence classifier")
    tokenizer = load_tokenizer(directory / TOKENIZER, recipe.data.max_length)
    model = load_weights(directory, BertForSequenceClassification(recipe.model))
    return model.eval(), tokenizer, recipe


@torch.no_grad()
def classify(model: BertForSequenceClassification, tokenizer: Tokenizer, sentences: Sequence[str]) -> list[int]:
    """The predicted label of each sentence."""
    model.eval()
    encoded = [e.ids for e in tokenizer.encode_batch(list(sentences))]
    batch = to_batch(encoded, [0] * len(encoded), model.config.pad_id)
    return model(batch.input_ids, batch.attention_mask).argmax(dim=-1).tolist()
