"""`python -m ehrjudge.cli` runs the CLI."""

from ehrjudge.cli import main

main()
