"""The errors the HTTP service answers with: an ``ApiError`` a route raises (status, stable code, message) and the
JSON body every error has, ``{"error": {"code", "message"}}``."""
from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the caller can fix: an HTTP status, a stable code and a message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
