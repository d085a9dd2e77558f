"""Counts in words for console lines: ``count(1, "thread")`` is "1 thread", ``count(2, "batch")`` "2 batches"."""
from __future__ import annotations

from typing import Optional


def plural(word: str) -> str:
    """The English plural of the nouns these commands count (image, unit, batch, class, ...)."""
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def count(n, word: str, words: Optional[str] = None) -> str:
    """``n`` and ``word``, plural unless ``n`` is 1 (``words``: an irregular plural)."""
    return f"{n} {word if n == 1 else (words or plural(word))}"
