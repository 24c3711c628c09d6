#!/usr/bin/env python
"""Entry point: `python sweep.py search_spaces/transformer.yaml` (see orchestrator/cli.py)."""

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main())
