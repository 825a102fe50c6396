"""Errors the compiler raises on purpose.

A :class:`CompileError` is bad usage or bad input: the CLI prints its one-line message and
exits 2. Anything else escaping the CLI is an internal error (exit 1).
"""
from __future__ import annotations


class CompileError(Exception):
    """A problem with the user's model, arguments or files; the message says what to do."""


class UnsupportedOpError(CompileError):
    """The model uses an operator (or an attribute value) cnn2mlp cannot convert."""


def first_line_of(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line (at most ``limit`` characters), or its type's name: what a
    one-line message quotes of a library's error."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def install_hint(extra: str) -> str:
    """How to add an extra, spelled as the README's install commands spell it."""
    return f'pip install -e ".[{extra}]" (in the cnn2mlp checkout)'
