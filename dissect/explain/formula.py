"""Formulas of compositional explanations (Mu & Andreas, NeurIPS 2020): left-deep chains
``((l0 op1 l1) op2 l2) ...`` over label columns with op in OR, AND, AND NOT.

The beam search of compexp only ever extends a formula on the right by one label and one
operator, so every formula it can reach is such a chain; a Formula stores it as two tuples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

OPS = ("OR", "AND", "AND NOT")  # op codes 0, 1, 2 (the order compexp tries them in)
OR, AND, AND_NOT = 0, 1, 2


@dataclass(frozen=True)
class Formula:
    """``labels[0] ops[0] labels[1] ops[1] labels[2] ...`` evaluated left to right.

    ``labels``: label columns (ints); ``ops``: op codes (0 OR, 1 AND, 2 AND NOT), one fewer
    than labels. An empty formula (no labels) explains nothing (a unit that never fires, or
    meets no label) and has IoU 0.
    """

    labels: tuple = ()
    ops: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(int(x) for x in self.labels))
        object.__setattr__(self, "ops", tuple(int(x) for x in self.ops))
        if self.labels and len(self.ops) != len(self.labels) - 1:
            raise ValueError(
                f"a formula of {len(self.labels)} labels needs {len(self.labels) - 1} operators, got {self.ops}"
            )
        if not self.labels and self.ops:
            raise ValueError("an empty formula has no operators")
        if any(o not in (OR, AND, AND_NOT) for o in self.ops):
            raise ValueError(f"operator codes must be 0 (OR), 1 (AND) or 2 (AND NOT), got {self.ops}")

    def __len__(self) -> int:
        """Number of labels (compexp's formula length with its default penalty of 1)."""
        return len(self.labels)

    def extend(self, op: int, label: int) -> "Formula":
        return Formula(self.labels + (int(label),), self.ops + (int(op),))

    def text(self, names: Union[Mapping[int, str], Sequence[str], Callable[[int], str], None] = None) -> str:
        """``(water OR river) AND NOT blue-c``: names of the label columns, inner parts in parentheses."""
        if not self.labels:
            return ""
        name: Callable[[Any], str]
        if names is None:
            name = str
        elif callable(names):
            name = names
        else:
            name = lambda c: names[c]  # noqa: E731 (a mapping or a sequence)
        out = name(self.labels[0])
        for i, (op, lab) in enumerate(zip(self.ops, self.labels[1:])):
            out = f"({out})" if i else out
            out = f"{out} {OPS[op]} {name(lab)}"
        return out

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        """The formula's mask from label masks ``masks[column]`` (bool arrays of one shape)."""
        if not self.labels:
            return np.zeros_like(masks[0], dtype=bool)
        out = np.array(masks[self.labels[0]], dtype=bool)
        for op, lab in zip(self.ops, self.labels[1:]):
            m = masks[lab]
            out = out | m if op == OR else out & m if op == AND else out & ~m
        return out
