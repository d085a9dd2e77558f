"""Errors raised by the store reader and writer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from ..errors import BrodenError


class StoreFormatError(BrodenError, ValueError):
    """A store file is missing or malformed. Names the file and, when known, the row (1-based data row)."""

    def __init__(self, path: Union[str, Path], message: str, row: Optional[int] = None):
        self.path = str(path)
        self.row = row
        self.message = message
        where = self.path if row is None else f"{self.path}, row {row}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        # rebuilt from its own arguments, so it crosses processes (DataLoader workers) unchanged
        return type(self), (self.path, self.message, self.row)
