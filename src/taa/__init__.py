"""taa: Transformer Architecture Adventures.

Every building block and model of the Transformer literature, written from scratch
and proven against reference implementations.

``import taa`` imports no framework. The PyTorch reference lives in ``taa.torch``;
configs and presets in ``taa.config``; the command line in ``taa.cli``.
"""

__version__ = "0.1.0"
