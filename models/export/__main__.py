"""Entry point for `python -m models.export`."""

import sys

from .cli import main

sys.exit(main())
