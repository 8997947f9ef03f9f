"""Untrusted text: JSON parsed under caps, and values shown in messages at a bounded length.

:func:`loads` is :func:`json.loads` for what other machines send (model servers' traces,
metadata servers' bodies): the text is refused, with :class:`UnsafeJSON` (a ``ValueError``),
when it is larger than its cap, nests deeper than its cap (found by a scan before the parser
recurses), holds an integer of more digits than its cap, or a ``NaN``/``Infinity`` constant
(not JSON). Nothing else comes out of it: a caller that catches ``ValueError`` has caught all.

:func:`short_repr` is ``repr`` that stops early, for error messages that quote a user's value.
Imports only the standard library.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "UnsafeJSON",
    "loads",
    "short_repr",
]

MAX_DEPTH = 32
MAX_INT_DIGITS = 30
# A JSON string, escapes included (the unrolled form, linear on any input).
_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")


class UnsafeJSON(ValueError):
    """The text is not JSON this parser accepts; the message says which cap or rule it broke."""


def loads(
    data: str | bytes | bytearray,
    *,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
    max_int_digits: int = MAX_INT_DIGITS,
) -> Any:
    """Parse untrusted JSON text or bytes, refusing what could exhaust time, memory or stack.

    Args:
        data: The text, or bytes in UTF-8 (or UTF-16/32, detected as :func:`json.loads` does).
        max_bytes: The largest input accepted, in bytes (characters for text).
        max_depth: The deepest nesting of arrays and objects accepted.
        max_int_digits: The most digits an integer may have (a float may be any length).

    Raises:
        UnsafeJSON: On any input that is not accepted; never another exception.
    """
    if len(data) > max_bytes:
        raise UnsafeJSON(f"larger than {max_bytes} bytes ({len(data)})")
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode(json.detect_encoding(data))
        except (UnicodeDecodeError, LookupError) as exc:
            raise UnsafeJSON(f"not UTF-8 text ({exc.__class__.__name__})") from None
    elif isinstance(data, str):
        text = data
    else:
        raise UnsafeJSON(f"expected text or bytes, got {type(data).__name__}")
    if text.startswith("\ufeff"):
        raise UnsafeJSON("starts with a byte order mark")
    depth = _depth(text, max_depth)
    if depth > max_depth:
        raise UnsafeJSON(f"nested deeper than {max_depth} levels")

    def parse_int(digits: str) -> int:
        if len(digits.lstrip("-")) > max_int_digits:
            raise UnsafeJSON(f"an integer of more than {max_int_digits} digits")
        return int(digits)

    def parse_constant(name: str) -> Any:
        raise UnsafeJSON(f"{name} is not a JSON number")

    try:
        return json.loads(text, parse_int=parse_int, parse_constant=parse_constant)
    except UnsafeJSON:
        raise
    except (ValueError, RecursionError, MemoryError) as exc:
        # ValueError includes json.JSONDecodeError and the interpreter's own digit limit.
        raise UnsafeJSON(_first_line(exc)) from None


def _depth(text: str, limit: int) -> int:
    """The deepest nesting of ``text``'s brackets outside strings, counted up to ``limit + 1``."""
    brackets = _NOT_BRACKET_RE.sub("", _STRING_RE.sub("", text))
    depth = deepest = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return short_text(text, 200)


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` in at most ``limit`` characters, without ever building the whole repr.

    Containers show their first items and ``...``; long strings their start and ``...``. Safe
    on values of any size or sharing (a YAML alias bomb), and on objects whose repr raises.
    """
    import reprlib

    shown_by = reprlib.Repr()
    shown_by.maxlevel = 3
    shown_by.maxstring = shown_by.maxother = shown_by.maxlong = max(10, limit)
    for name in ("maxdict", "maxlist", "maxtuple", "maxset", "maxfrozenset", "maxdeque"):
        setattr(shown_by, name, 4)
    try:
        shown = shown_by.repr(value)
    except Exception:
        shown = f"<{type(value).__name__}>"
    return short_text(shown, limit)


def short_text(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters, ending in ``...`` when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 3)] + "..."
