"""``python -m nbutils.train MODEL`` (see :mod:`nbutils.train.cli`)."""

import sys

from .cli import main

sys.exit(main())
