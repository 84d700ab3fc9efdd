"""The Keras 3 port of taa: the same modules, classes and weight names as :mod:`taa.torch`."""
