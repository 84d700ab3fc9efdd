"""The Flax NNX twins of :mod:`taa.torch.models`, file for file: ``transformer`` (with what every
model shares: :class:`~taa.flax.models.transformer.ConfigModel`, ``tie``), ``gpt``, ``bert``
and ``t5``. Each model is an ``nnx.Module`` built from its config dataclass, with torch's
attribute names, so :mod:`taa.flax.weights` gives its torch twin's state dict."""
