"""`python -m foodcal.cli …`: the command-line client (foodcal/cli/main.py)."""

import sys

from foodcal.cli.main import main

sys.exit(main())
