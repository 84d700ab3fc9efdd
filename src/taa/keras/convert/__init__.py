"""The Keras side of the weight converters: build and fill Keras models from the
framework-neutral key maps of :mod:`taa.convert`, and read their weights back.

- :mod:`taa.keras.convert.hf`: Hugging Face folders <-> taa's Keras models
  (``load_hf_folder``, ``save_hf_folder``).

Loading a checked state dict is :func:`taa.keras.weights.load_state_dict`.
"""

from taa.keras.convert.hf import load_hf_folder, save_hf_folder

__all__ = ["load_hf_folder", "save_hf_folder"]
