"""`python -m rules.execution.server ...` starts an export server (see main.py)."""

import sys

from rules.execution.server.main import main

sys.exit(main(sys.argv))
