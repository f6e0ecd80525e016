"""The project's exception family.

Every error a user can cause is an ``MmindexError`` carrying, where known, the file and
row it is about; the CLI prints it as one line and exits non-zero.
"""
from __future__ import annotations


class MmindexError(Exception):
    """Base of every error mmindex raises on purpose."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None):
        self.message = message
        self.file = file
        self.row = row
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}"
            if self.row is not None:
                where += f" row {self.row}"
            where += ": "
        return where + self.message


class InputError(MmindexError):
    """The input files or their columns cannot be used as asked."""


class UsageError(InputError):
    """A request whose parts cannot go together, or that names something that is not there (an empty query, an
    unknown field to show); the CLI reports it as a usage error (exit code 2)."""


class ModelError(MmindexError):
    """The embedding model cannot be loaded or used."""


class EncodeError(ModelError):
    """The model's forward pass raised for some inputs (``failures``: index → error); ``vectors`` holds the
    others' (NaN rows for the failed ones)."""

    def __init__(self, failures: dict[int, str], vectors, items, kind: str):
        self.failures, self.vectors = failures, vectors
        first = min(failures)
        shown = items[first] if isinstance(items[first], str) else f"image {first + 1}"
        if isinstance(shown, str) and len(shown) > 60:
            shown = shown[:57] + "…"
        more = f" (and {len(failures) - 1} more of {len(items)})" if len(failures) > 1 else ""
        super().__init__(f"the model failed on {kind} {shown!r}{more}: {failures[first]}")


class CollectionMismatchError(MmindexError):
    """The collection was built with another model or vector size."""


class StoreError(MmindexError):
    """The vector store refused or failed an operation."""


class FilterError(MmindexError):
    """A ``--where`` expression or raw filter is malformed."""
