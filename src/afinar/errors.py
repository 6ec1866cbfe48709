"""Errors the services raise. Adapters map them to exit codes (CLI) or HTTP statuses (server).

Each error carries a machine-readable ``code`` and, where it names an input, a ``param``, mirroring
OpenAI's error object so the server can pass them through unchanged.
"""

from __future__ import annotations


class AfinarError(Exception):
    """Base class: a clear message for the user, a stable code for programs."""

    code = "afinar_error"
    http_status = 500

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.param = param


class NotFound(AfinarError):
    code = "not_found"
    http_status = 404


class InvalidRequest(AfinarError):
    code = "invalid_request"
    http_status = 400


class Conflict(AfinarError):
    code = "conflict"
    http_status = 409


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"
