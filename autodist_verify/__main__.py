"""``python -m autodist_verify`` is the ``autodist-verify`` command."""

from autodist_verify.cli import main

main(prog_name="autodist-verify")
