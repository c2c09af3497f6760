"""`python -m registry ...` is the `registry` command, for environments without the console script on PATH."""

import sys

from registry.cli import main

if __name__ == "__main__":
    sys.exit(main())
