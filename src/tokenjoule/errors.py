"""Errors that reach the user as one line, never as a traceback.

Raise `TokenjouleError` (or a subclass) for anything the user can fix: bad input, a missing
optional dependency, a missing measurement. The CLI prints `error: <message>` and exits 2.
"""

from __future__ import annotations


class TokenjouleError(Exception):
    """A problem the user can act on; its message is printed as one line."""

    exit_code = 2


class UnknownNameError(TokenjouleError):
    """A name (preset, engine, mode, decoding, trace...) that is not one of the valid ones."""

    def __init__(self, kind: str, name: str, valid: list[str] | tuple[str, ...]):
        self.kind, self.name, self.valid = kind, name, list(valid)
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(self.valid)}")


class MissingDependencyError(TokenjouleError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, install: str):
        super().__init__(f"{package} is not installed; install it with: {install}")


class CellFailure(TokenjouleError):
    """A measured cell failed (out of memory, engine error); recorded, then reported."""

    exit_code = 1
