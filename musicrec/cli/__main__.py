"""`python -m musicrec.cli`: the same as the `musicrec` command."""

import sys

from musicrec.cli import main

sys.exit(main())
