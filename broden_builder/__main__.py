"""``python -m broden_builder``: the ``broden`` command (broden_builder.cli)."""
import sys

from .cli import console

sys.exit(console())
