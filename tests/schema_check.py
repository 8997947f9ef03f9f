"""Validate documents against carbonpipe's packaged JSON Schemas, strictly: a ``number`` must be
a JSON float (``0.0``), never an int (``0``), which plain JSON Schema cannot tell apart."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.validators import Draft202012Validator, extend

from carbonpipe.schemas.table import load_schema

_STRICT_TYPES = Draft202012Validator.TYPE_CHECKER.redefine(
    "number", lambda _checker, value: isinstance(value, float)
)
StrictValidator = extend(Draft202012Validator, type_checker=_STRICT_TYPES)


@cache
def validator(name: str) -> Any:
    """A strict validator of the packaged schema ``name`` (checked as a 2020-12 schema first)."""
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return StrictValidator(schema)


def errors(name: str, document: bytes | str | Mapping[str, Any]) -> list[str]:
    """Every way ``document`` breaks schema ``name``: ``path: message`` each."""
    data = json.loads(document) if isinstance(document, (bytes, str)) else document
    found = validator(name).iter_errors(data)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]


def assert_valid(name: str, document: bytes | str | Mapping[str, Any], where: str = "") -> None:
    """Fail naming every error of ``document`` against schema ``name``."""
    problems = errors(name, document)
    assert not problems, f"{where or name}: " + "; ".join(problems)


def assert_all_valid(name: str, files: Iterable[Path]) -> int:
    """Validate every file; return how many there were."""
    count = 0
    for path in files:
        assert_valid(name, path.read_bytes(), str(path))
        count += 1
    return count


__all__ = [
    "StrictValidator",
    "assert_all_valid",
    "assert_valid",
    "errors",
    "jsonschema",
    "validator",
]
