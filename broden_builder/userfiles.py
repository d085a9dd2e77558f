"""Files a user hands in, identified and loaded the one way: :func:`file_sha256` (the identity
recorded in provenance: model weights, checkpoints, shards) and :func:`import_user_file` (a
``file.py`` named by a ``file.py:function`` spec, imported under a name of its own), and
:func:`missing_model_folder` (an ``hf:REF`` that names a local folder which is not there).
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Union


def file_sha256(path: Union[str, Path]) -> str:
    """sha256 hex digest of the file at ``path``, read in 1 MiB blocks. Raises OSError."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def import_user_file(path: Union[str, Path], namespace: str) -> ModuleType:
    """Import the Python file ``path`` as a module named ``<namespace>_<8 hex of its resolved path>``
    (two files of one name never share a module). Whatever the file raises propagates: the caller
    names it in its own error."""
    path = Path(path)
    name = f"{namespace}_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def missing_model_folder(ref: str):
    """The folder ``ref`` (of an ``hf:REF`` spec) names when it is meant as a local folder that does not
    exist, else None (an existing folder, or a hub id ``org/name`` to look up in the local cache).
    A path is meant when ``ref`` starts with ``.``, ``/`` or ``~``, has more than one ``/``, has a
    file suffix, or its first component is an existing local folder (``models/clip`` beside a
    ``models/`` folder): a hub id is ``org/name`` (or a legacy ``name``) and names no such folder."""
    folder = Path(ref).expanduser()
    if folder.is_dir():
        return None
    first = ref.split("/", 1)[0]
    meant = (ref.startswith((".", "/", "~")) or ref.count("/") > 1 or bool(folder.suffix)
             or ("/" in ref and bool(first) and Path(first).expanduser().is_dir()))
    return folder if meant else None
