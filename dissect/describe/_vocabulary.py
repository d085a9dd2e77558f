"""The words units are described with: a text file, the store's own label names, or common English.

The default list is the ``wordfreq`` package's English frequency list (code Apache-2.0; its word
lists CC BY-SA 4.0, by Robyn Speer and contributors, from Wikipedia, subtitles, news, books, web
text, Twitter and Reddit): the most frequent words of at least 3 letters, as CLIP-Dissect used the
20,000 most common English words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import DissectError

COMMON_SOURCE = "wordfreq English list (code Apache-2.0, word lists CC BY-SA 4.0)"


def common_words(n: int = 20000) -> list:
    """The ``n`` most frequent English words of >= 3 letters (wordfreq; module docstring)."""
    try:
        from wordfreq import top_n_list
    except ImportError:
        raise DissectError(
            "the default vocabulary needs the wordfreq package (pip install 'broden-dissect[describe]'); "
            "or give --vocabulary FILE (one word per line) or --vocabulary store"
        ) from None
    out = []
    for w in top_n_list("en", max(4 * n, 1000)):
        if w.isalpha() and len(w) >= 3 and w not in out:
            out.append(w)
            if len(out) == n:
                break
    return out


def read_vocabulary(path: Path) -> list:
    """Words of a UTF-8 text file, one per line (blank lines and lines starting with '#' skipped; duplicates once)."""
    try:
        text = Path(path).read_text("utf-8-sig")
    except FileNotFoundError:
        raise DissectError(f"vocabulary file {path} not found") from None
    except UnicodeDecodeError as e:
        raise DissectError(f"vocabulary file {path}: not UTF-8 text ({e})") from None
    words = list(dict.fromkeys(w.strip() for w in text.splitlines() if w.strip() and not w.lstrip().startswith("#")))
    if not words:
        raise DissectError(f"vocabulary file {path} holds no word")
    return words


#: Broden's category suffixes (colours ``red-c``, scenes ``street-s``), not part of the word
SUFFIXES = ("-c", "-s")


def label_word(label: str) -> str:
    """A store label as a word: Broden's suffix removed (``street-s`` -> ``street``), lower case."""
    for suffix in SUFFIXES:
        if label.endswith(suffix) and len(label) > len(suffix):
            label = label[: -len(suffix)]
    return label.strip().lower()


def store_words(store) -> list:
    """The store's label names as words (category suffixes removed, duplicates once)."""
    return list(dict.fromkeys(label_word(l.name) for l in store.labels if l.number))


def choose_vocabulary(spec: Optional[str], store=None, n: int = 20000) -> tuple:
    """(words, what they are) for ``--vocabulary``: None or 'common' (wordfreq), 'store', or a file."""
    if spec in (None, "", "common"):
        return common_words(n), f"{n} common English words: {COMMON_SOURCE}"
    if spec == "store":
        if store is None:
            raise DissectError("--vocabulary store needs --store")
        return store_words(store), f"the label names of {store.root}"
    return read_vocabulary(Path(spec)), f"file {spec}"


__all__ = ["label_word", "common_words", "read_vocabulary", "store_words", "choose_vocabulary", "COMMON_SOURCE"]
