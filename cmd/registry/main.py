#!/usr/bin/env python3
"""Run the registry server from a source checkout: `python cmd/registry/main.py -id registry-1`.

Mirrors the Go original's cmd/main.go.  This directory is deliberately not a
package (no __init__.py): it is a script, never something to import.
"""

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from registry.cli import main

    sys.exit(main())
