"""The ``dissect`` command (see dissect.cli.main)."""
import sys


def main(argv=None) -> int:
    print("dissect: not implemented yet", file=sys.stderr)
    return 2
