"""What training needs that no framework provides: learning-rate schedules, the progress bar,
the names of the number formats and the batch-stream protocol. Imports no framework; each
framework's Trainer (``taa.torch.training``) uses these.
"""

from taa.training.batches import BatchStream
from taa.training.dtypes import BFLOAT16, DEFAULT_DTYPE, DTYPES, FLOAT32, check_dtype
from taa.training.progress import TrainingProgress
from taa.training.schedules import constant, cosine, noam, schedule_from_config

__all__ = [
    "BFLOAT16", "BatchStream", "DEFAULT_DTYPE", "DTYPES", "FLOAT32", "TrainingProgress", "check_dtype", "constant",
    "cosine", "noam", "schedule_from_config",
]
