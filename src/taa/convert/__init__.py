"""Weight converters: explicit key maps plus layout fixes, checked key by key and shape by shape.

Framework-neutral: the maps take and return mappings of names to arrays (torch tensors,
numpy or JAX arrays) and import no framework, so every port reuses them. Building a model
from what they return is the framework's part (:mod:`taa.torch.convert` for torch).
Every reader of a safetensors file opens it through :mod:`taa.safetensors_file`,
so a damaged or foreign file is one line naming it.
"""
