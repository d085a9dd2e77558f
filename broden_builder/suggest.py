"""'Did you mean ...?' hints for names the user typed (source types, labels, keys).

Plain ``difflib`` ratios; Broden's category suffixes (``-c`` colours, ``-s`` scenes) are tried
as well, so ``red`` finds ``red-c``.
"""
from __future__ import annotations

import difflib
from typing import Iterable

SUFFIXES = ("-c", "-s")


def nearest(name: str, choices: Iterable[str], n: int = 3) -> list:
    """Up to ``n`` choices closest to ``name``: its suffix or case variants when there are any, else difflib's."""
    choices = list(dict.fromkeys(str(c) for c in choices))
    exact = [name + s for s in SUFFIXES if name + s in choices]
    lower = {c.lower(): c for c in choices}
    if name.lower() in lower and lower[name.lower()] not in exact:
        exact.append(lower[name.lower()])
    if exact:  # the same name but for a suffix or case: nothing else is as likely
        return exact[:n]
    return difflib.get_close_matches(name, choices, n=n, cutoff=0.6)


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """``"; did you mean 'red-c'?"`` (or ``" or "``-joined for several), or ``""`` when nothing is close."""
    near = nearest(name, choices, n)
    if not near:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in near) + "?"
