"""The original Broden build's synonym function, with its tables (``data/synonyms.json``).

The tables are the original Network Dissection code's ``common_names`` (name -> preferred
names, first is preferred) and ``confusing_names`` (name -> names that must not stand
with it), MIT licence, Copyright (c) 2017 MIT CSAIL (see ``data/ATTRIBUTION.md``). The
function is written here from the rule in docs/format.md ("How the original build
unified its sources", rule 3); it is the field's semantics, so it is our own code.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Sequence


@lru_cache(maxsize=1)
def synonym_tables() -> tuple:
    """(common_names, confusing_names): dicts name -> tuple of names, from the package data."""
    with resources.files("broden_builder").joinpath("data/synonyms.json").open("rb") as f:
        data = json.load(f)
    common = {str(k): tuple(str(x) for x in v) for k, v in data["common_names"].items()}
    confusing = {str(k): tuple(str(x) for x in v) for k, v in data["confusing_names"].items()}
    return common, confusing


def synonym_list(names: Sequence[str]) -> tuple:
    """The original synonym function on one label's (lower-cased) name list.

    If no name is a key of ``common_names`` or ``confusing_names`` the list is kept as is.
    Otherwise: each name's ``common_names`` entries (names in order), then the names
    themselves; every name that some name of that combined list marks as confusing is
    removed; duplicates are removed keeping the first. ``('right arm',)`` -> ``('arm',)``;
    ``('flowerpot', 'pot')`` -> ``('flowerpot',)``.
    """
    common, confusing = synonym_tables()
    names = list(names)
    if not any(n in common or n in confusing for n in names):
        return tuple(dict.fromkeys(names))
    combined = [c for n in names for c in common.get(n, ())] + names
    banned = {b for n in combined for b in confusing.get(n, ())}
    return tuple(dict.fromkeys(n for n in combined if n not in banned))
