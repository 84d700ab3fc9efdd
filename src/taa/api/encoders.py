"""``taa embed``, ``taa classify``: what a BERT encoder does with sentences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from taa import config as cfg
from taa import registry
from taa.api._common import Notify, PathLike, _check_sentences, _hugging_face_tokenizer, _warn, _warn_truncated
from taa.api._common import _what, load, port_module, tasks_of, to_numpy
from taa.folders import CheckpointError


# --------------------------------------------------------------------------------------
# taa embed, taa classify
# --------------------------------------------------------------------------------------


def embed(checkpoint: PathLike, *, sentences: Sequence[str], dtype: str = "float32",
          batch_size: int = 32, notify: Optional[Notify] = None, device: str = "auto",
          framework: str = "torch") -> list[list[float]]:
    """Sentence embeddings (Sentence-BERT): the mean of a BERT's last hidden states over the
    real tokens, L2-normalised; a vector per sentence. A sentence longer than the model
    reads is cut to its length (its positions, or a sentence-transformers folder's
    ``max_seq_length``), as sentence-transformers does; ``notify(line)`` (default: a
    warning) says how many were cut. ``device``: where the model runs (auto: a GPU when
    there is one); the vectors come back as Python floats. ``framework``: torch, or a
    port (``"keras"``, ``"flax"``: float32, where its framework puts the model)."""
    sentences = _check_sentences(sentences)
    pretrained = load(checkpoint, dtype, device, framework)
    family = registry.family_of_architecture(pretrained.architecture)
    if not family.embeds_sentences:
        raise cfg.ConfigError(f"{checkpoint}: a {pretrained.architecture}, not a model that embeds sentences "
                              f"(taa embed needs a BERT)")
    tokenizer = _hugging_face_tokenizer(pretrained, checkpoint, "taa embed")
    # A task model (BertForMaskedLM, ...) holds the family's default class, its encoder, as .bert
    encoder = pretrained.model if pretrained.architecture == family.default_architecture else pretrained.model.bert
    if not sentences:
        return []
    _warn_truncated(tokenizer, sentences, notify or _warn)
    if framework != "torch":  # a port's sentence_embeddings, as torch's
        bert = port_module(framework, "models.bert")
        vectors = bert.sentence_embeddings(encoder, tokenizer, list(sentences), batch_size=batch_size)
        return to_numpy(vectors, framework).tolist()
    import torch

    from taa.torch.models.bert import sentence_embeddings

    with torch.inference_mode():
        return sentence_embeddings(encoder, tokenizer, list(sentences), batch_size=batch_size).tolist()


def classify(checkpoint: PathLike, *, sentences: Sequence[str], batch_size: int = 32,
             notify: Optional[Notify] = None, device: str = "auto") -> list[dict[str, Any]]:
    """Each sentence's label and the probability of every label, by a sequence classifier
    (a ``classification`` run, or a Hugging Face BertForSequenceClassification folder).
    A sentence longer than the classifier reads (a run's ``data.max_length``, else its
    positions) is cut to that length, as in training; ``notify(line)`` (default: a
    warning) says how many were cut. ``device``: where the model runs (auto: a GPU when
    there is one).

    Returns ``[{"sentence", "label", "label_id", "probabilities"}, ...]``: ``label`` is the
    label's name when the run has names (``data.label_names``, SST-2's ``negative`` and
    ``positive``, a Hugging Face ``id2label``), else its id; ``probabilities`` maps each
    label (name, or id as text) to its probability.

    An image classifier (an ``image_classification`` run, a Hugging Face
    ViTForImageClassification folder) reads ``sentences`` as image files (PNG, JPEG):
    :func:`classify_images`.
    """
    from taa.tasks.classification import label_names, probabilities

    pretrained = load(checkpoint, device=device)
    if "image_classification" in tasks_of(pretrained):
        return classify_images(pretrained, sentences)
    sentences = _check_sentences(sentences)
    pretrained = _load_classifier(checkpoint, pretrained)
    tokenizer = _hugging_face_tokenizer(pretrained, checkpoint, "taa classify")
    _warn_truncated(tokenizer, sentences, notify or _warn)
    names = label_names(pretrained)
    keys = names or [str(i) for i in range(pretrained.config.num_labels)]
    results = []
    for sentence, row in zip(sentences, probabilities(pretrained.model, tokenizer, sentences, batch_size)):
        best = max(range(len(row)), key=row.__getitem__)
        results.append({"sentence": sentence, "label": names[best] if names else best, "label_id": best,
                        "probabilities": dict(zip(keys, row))})
    return results


def _load_classifier(checkpoint: PathLike, pretrained):
    if "classification" not in tasks_of(pretrained):
        raise CheckpointError(f"{checkpoint}: {_what(pretrained)}, not a sentence or image classifier "
                              f"(a {registry.task('classification').architecture} or a "
                              f"{registry.task('image_classification').architecture})")
    return pretrained


def classify_images(pretrained, images: Sequence[str]) -> list[dict[str, Any]]:
    """Each image file's class and the probability of every class, by a loaded image
    classifier: ``[{"image", "label", "label_id", "probabilities"}, ...]``, ``label`` the
    class's name (a run's classes, a Hugging Face ``id2label``, else its id)."""
    from taa.tasks.image_classification import classify_images as classify_files

    if not images:
        raise cfg.ConfigError("give the image files to classify (PNG or JPEG)")
    results = classify_files(pretrained, list(images))
    names = list(results[0]["probabilities"]) if results else []
    return [{**result, "label_id": names.index(result["label"])} for result in results]
