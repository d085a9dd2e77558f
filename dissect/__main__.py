"""``python -m dissect``: the ``dissect`` command (dissect.cli)."""

import sys

from .cli import console

sys.exit(console())
