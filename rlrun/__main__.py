"""`python -m rlrun`: the `rlrun` command."""

from rlrun.cli import main

main()
