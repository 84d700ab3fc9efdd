"""The Keras twins of :mod:`taa.torch.models`, file for file: ``transformer`` (with what every
model shares: :class:`~taa.keras.models.transformer.ConfigModel`, ``TiedLinear``), ``gpt``,
``bert`` and ``t5``. Each model is a ``keras.Model`` built from its config dataclass, with
torch's attribute names, so :mod:`taa.keras.weights` gives its torch twin's state dict."""
