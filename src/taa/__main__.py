"""``python -m taa``: the ``taa`` command line."""

from taa.cli import main

main(prog_name="taa")
