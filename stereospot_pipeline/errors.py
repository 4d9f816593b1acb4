"""Errors a user can act on: each names the file, what is wrong, and what to do."""

from __future__ import annotations


class StereospotError(Exception):
    """Base class for errors that are reported to users as-is (no traceback needed)."""


class InvalidVideoError(StereospotError):
    """The input cannot be converted; the message says which file, why, and what to do."""

    def __init__(self, path: str, problem: str, hint: str = "check that the file is a complete video"):
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        super().__init__(f"{self.path}: {problem} ({hint})")
