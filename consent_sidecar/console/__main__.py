"""`python -m consent_sidecar.console [flags]`: the console verb without the main command line."""

from __future__ import annotations

import sys

from consent_sidecar.console.cli import main

if __name__ == "__main__":
    sys.exit(main())
