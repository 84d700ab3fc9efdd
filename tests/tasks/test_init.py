"""The task registry ``taa train`` dispatches on: every task config has a module with ``run``."""

import inspect
import subprocess
import sys

import pytest

from taa.config import TASKS
from taa.tasks import TASK_MODULES, task_runner


def test_every_task_has_a_runner_with_the_common_signature():
    assert set(TASK_MODULES) == set(TASKS)
    for task in TASKS:
        parameters = list(inspect.signature(task_runner(task)).parameters)
        assert parameters == ["recipe", "out", "progress", "resume", "tracker", "overwrite"], task


def test_unknown_task_names_the_known_ones():
    with pytest.raises(KeyError, match="task 'dance' has no module"):
        task_runner("dance")


def test_the_registry_imports_no_framework():
    code = "import sys, taa.tasks; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
