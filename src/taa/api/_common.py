"""What the API's modules share: loading a folder, what a loaded model can do (from the
registry), and a translation run's model and decoding settings."""

from __future__ import annotations

from pathlib import Path

from taa import config as cfg
from taa import registry

PathLike = str | Path


# --------------------------------------------------------------------------------------
# Loading, and what a loaded model can do (from the registry)
# --------------------------------------------------------------------------------------


def load(checkpoint: PathLike, dtype: str = "float32"):
    """:func:`taa.torch.from_pretrained` of any folder (``dtype``: ``bfloat16`` casts the weights)."""
    from taa.torch.hub import from_pretrained

    return from_pretrained(checkpoint, dtype=None if dtype == "float32" else dtype)


def tasks_of(pretrained) -> list[str]:
    """The tasks a loaded model serves: a training run's own task, else every task of the
    registry that trains its class (a Hugging Face GPT2LMHeadModel: ``language_model``)."""
    if pretrained.recipe is not None:
        return [pretrained.recipe.task]
    return [spec.name for spec in registry.tasks() if spec.architecture == pretrained.architecture]


def _hugging_face_tokenizer(pretrained, checkpoint: PathLike, needed_for: str):
    """The folder's ``tokenizers.Tokenizer`` (one that adds BERT's [CLS] and [SEP])."""
    tokenizer = pretrained.tokenizer
    if not hasattr(tokenizer, "encode_batch"):
        raise cfg.ConfigError(f"{checkpoint}: no Hugging Face tokenizer (tokenizer.json) that adds [CLS] and [SEP] "
                              f"({needed_for} needs one)")
    return tokenizer


def _what(pretrained) -> str:
    """``a 'translation' run (a Transformer)`` or ``a GPT``: what a loaded folder holds."""
    if pretrained.recipe is not None:
        return f"a {pretrained.recipe.task!r} run (a {pretrained.architecture})"
    return f"a {pretrained.architecture}"


def _load_translator(checkpoint: PathLike):
    from taa.tasks.translation import load_translator

    return load_translator(checkpoint)


def _decoding(checkpoint, **options):
    """The checkpoint's decoding settings (its recipe's, or a Hugging Face folder's), with
    the options given (None: not given) in their place."""
    from taa.decoding import decoding_defaults

    try:
        return decoding_defaults(checkpoint).replace(**options)
    except ValueError as error:  # the settings check themselves: one line naming the field
        raise cfg.ConfigError(str(error)) from None
