"""``python -m engine``: parse arguments and run (see :mod:`engine._cli`)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
