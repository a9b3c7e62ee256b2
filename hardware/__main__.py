"""``python -m hardware``: show the CPU topology and the pinning plan (see ``_cli``)."""

import sys

from ._cli import main

sys.exit(main())
