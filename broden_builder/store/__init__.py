"""The Broden store format: reader, writer, validation."""

from .errors import StoreFormatError
from .reader import BrodenStore

__all__ = ["BrodenStore", "StoreFormatError"]
