"""Layer selectors: which tensor of which call of which module is dissected.

Grammar (the selector text is what ``--layer`` takes and what result.json records)::

    MODULE[#CALL][:KEY[:KEY...]]

- ``MODULE`` is a name from ``model.named_modules()`` (``layer4``, ``features.28``);
- ``#CALL`` picks one call (1-based) of a module that runs more than once per forward pass
  (a shared ``nn.ReLU``, torchvision's ``layerN.M.relu``, a weight-shared block). Without it,
  such a module is refused (CallCountError) instead of being scored from an arbitrary call;
- ``:KEY`` picks one tensor of a structured output: an index into a tuple/list (``block:1``),
  a key of a dict or Hugging Face ``ModelOutput`` (``backbone:p2``,
  ``encoder:last_hidden_state``), or a dataclass field. Keys chain (``head:0:logits``).

An output that holds exactly one tensor (``(tensor, None)`` from a Hugging Face attention
module) is unambiguous and used without a key; the key is then recorded in the resolved
selector. An output holding several tensors without a key is refused (SelectorError).
A name that is itself a module (even if it contains ``#`` or ``:``) is taken as a module.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import torch

from ..errors import DissectError


class SelectorError(DissectError):
    """A selector that does not fit the module's output (unknown key, several tensors, no tensor)."""


class CallCountError(DissectError):
    """A module that runs a number of times per forward pass that the selector does not allow."""


@dataclass(frozen=True)
class Selector:
    """One tensor of one call of one module. ``call`` is 1-based (None: the module's only call)."""

    module: str
    call: Optional[int] = None
    path: tuple = ()

    def __str__(self) -> str:
        return self.module + (f"#{self.call}" if self.call else "") + "".join(f":{k}" for k in self.path)

    def with_path(self, path: Iterable) -> "Selector":
        return Selector(self.module, self.call, tuple(str(k) for k in path))


_CALL = re.compile(r"^(.*)#(\d+)$")


def parse_selector(text: str, module_names: Optional[Iterable[str]] = None) -> Selector:
    """``MODULE[#CALL][:KEY...]`` as a Selector; raises SelectorError for a malformed one.

    ``module_names`` (optional) lets a module whose name contains ``#`` or ``:`` be named plainly.
    """
    text = str(text).strip()
    if not text:
        raise SelectorError("empty layer name")
    if module_names is not None and text in set(module_names):
        return Selector(text)
    head, *path = text.split(":")
    call = None
    m = _CALL.match(head)
    if m:
        head, call = m.group(1), int(m.group(2))
        if call < 1:
            raise SelectorError(f"layer {text!r}: calls are counted from 1 ({head}#1 is the first call)")
    elif "#" in head:
        raise SelectorError(f"layer {text!r}: after '#' comes the call number (e.g. {head.split('#')[0]}#2)")
    if not head:
        raise SelectorError(f"layer {text!r} names no module")
    if any(not k for k in path):
        raise SelectorError(f"layer {text!r} has an empty key after ':'")
    return Selector(head, call, tuple(path))


def _kind(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return "tensor"
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return "tuple"
    if isinstance(obj, list):
        return "list"
    if isinstance(obj, dict):  # dict, OrderedDict, Hugging Face ModelOutput
        return "dict"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return "dataclass"
    if isinstance(obj, tuple):  # namedtuple
        return "namedtuple"
    return type(obj).__name__


def _children(obj) -> list:
    """(key, child) pairs of a structured output (empty for a tensor or a leaf)."""
    kind = _kind(obj)
    if kind in ("tuple", "list"):
        return [(str(i), v) for i, v in enumerate(obj)]
    if kind == "namedtuple":
        return list(zip(obj._fields, obj))
    if kind == "dict":
        return [(str(k), v) for k, v in obj.items()]
    if kind == "dataclass":
        return [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    return []


def tensor_leaves(obj, depth: int = 3, prefix: tuple = ()) -> Iterator[tuple]:
    """(path, tensor) for every tensor in a (nested, up to ``depth``) output structure."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
        return
    if depth <= 0:
        return
    for k, v in _children(obj):
        yield from tensor_leaves(v, depth - 1, prefix + (k,))


def _step(obj, key: str, where: str):
    kind = _kind(obj)
    if kind in ("tuple", "list", "namedtuple"):
        if kind == "namedtuple" and key in obj._fields:
            return getattr(obj, key)
        try:
            i = int(key)
            return obj[i]
        except (ValueError, IndexError):
            raise SelectorError(
                f"{where} is a {kind} of {len(obj)}: no element {key!r} (use an index 0..{len(obj) - 1})"
            ) from None
    if kind == "dict":
        if key in obj:
            return obj[key]
        for k in obj:  # non-string keys (ints) named by their text
            if str(k) == key:
                return obj[k]
        raise SelectorError(f"{where} is a dict with keys {[str(k) for k in obj.keys()]}: no key {key!r}")
    if kind == "dataclass":
        names = [f.name for f in dataclasses.fields(obj)]
        if key in names:
            return getattr(obj, key)
        raise SelectorError(f"{where} is a {type(obj).__name__} with fields {names}: no field {key!r}")
    raise SelectorError(f"{where} is a {kind}, which has no element {key!r}")


def select_tensor(output, sel: Selector) -> tuple:
    """(tensor, resolved path) picked from a module ``output`` by ``sel.path``.

    Raises SelectorError when the path does not exist, leads to something that is not a tensor,
    or (no path) when the output holds several tensors or none.
    """
    obj, where = output, f"the output of {sel.module!r}"
    for k in sel.path:
        obj = _step(obj, k, where)
        where = f"{where}[{k}]"
    if isinstance(obj, torch.Tensor):
        return obj, tuple(sel.path)
    leaves = list(tensor_leaves(obj))
    base = str(sel)
    if len(leaves) == 1:
        return leaves[0][1], tuple(sel.path) + leaves[0][0]
    if not leaves:
        raise SelectorError(f"{where} is {describe(obj)}, which holds no tensor")
    choices = ", ".join(f"'{base}:{':'.join(p)}' ({shape_text(t.shape)})" for p, t in leaves[:8])
    raise SelectorError(
        f"{where} is a {_kind(obj)} holding {len(leaves)} tensors; choose one: {choices}"
        + (" ..." if len(leaves) > 8 else "")
    )


def shape_text(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def describe(obj, depth: int = 2) -> str:
    """A short text for an output structure: 'tensor 1x64x8x8', 'tuple(2)[0: tensor 1x8, 1: None]'."""
    kind = _kind(obj)
    if kind == "tensor":
        return f"tensor {shape_text(obj.shape)}"
    if obj is None:
        return "None"
    kids = _children(obj)
    if not kids:
        return kind
    if depth <= 0:
        return f"{kind}({len(kids)})"
    inner = ", ".join(f"{k}: {describe(v, depth - 1)}" for k, v in kids[:6]) + (", ..." if len(kids) > 6 else "")
    return f"{kind}({len(kids)})[{inner}]"


def structure_kind(obj) -> str:
    """'tensor', 'tuple', 'list', 'dict', 'dataclass', 'namedtuple' or the type name."""
    return _kind(obj)
