"""The torch side of the weight converters: build and fill ``nn.Module``s from the
framework-neutral key maps of :mod:`taa.convert`, and read their state dicts back.

- :mod:`taa.torch.convert.hf`: Hugging Face folders <-> taa's torch models
  (``load_hf_folder``, ``save_hf_folder``);
- :mod:`taa.torch.convert.state_dict`: a strict, checked ``load_state_dict``;
- :mod:`taa.torch.convert.torch_nn`: ``torch.nn.Transformer`` <-> taa's stacks (the parity tests' converter).
"""

from taa.torch.convert.hf import load_hf_folder, save_hf_folder
from taa.torch.convert.state_dict import expected_shapes, load_checked
from taa.torch.convert.torch_nn import from_torch_nn, to_torch_nn

__all__ = ["expected_shapes", "from_torch_nn", "load_checked", "load_hf_folder", "save_hf_folder", "to_torch_nn"]
