"""`python -m musicrec.cli`: the same as the `musicrec` command."""

from musicrec.cli import console_main

console_main()
