import pytest

from taa.config import TrainConfig
from taa.training import dtypes


def test_the_names_and_their_check():
    assert dtypes.DTYPES == ("float32", "bfloat16") and dtypes.DEFAULT_DTYPE == "float32"
    assert dtypes.check_dtype("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="dtype='float16' is not one of float32, bfloat16"):
        dtypes.check_dtype("float16")


def test_a_recipe_defaults_to_the_default_dtype():
    assert TrainConfig().dtype == dtypes.DEFAULT_DTYPE
