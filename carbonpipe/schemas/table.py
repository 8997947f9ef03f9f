"""Find and read the packaged JSON Schemas; print one's fields as a Markdown table.

``python -m carbonpipe.schemas.table [record|charge|baseline|esg_report]`` prints the table
the README holds between its ``<!-- schema-table:NAME -->`` markers (a test checks they agree),
so each field is described once, in its schema.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Each document's schema file, by name: the file name carries the version.
SCHEMA_FILES = {
    "record": "record.v2.json",
    "charge": "charge.v2.json",
    "baseline": "baseline.v1.json",
    "esg_report": "esg_report.v1.json",
}
_HERE = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    """The packaged schema file of ``name`` (a key of :data:`SCHEMA_FILES`)."""
    try:
        return _HERE / SCHEMA_FILES[name]
    except KeyError:
        raise ValueError(f"no schema {name!r}: one of {', '.join(SCHEMA_FILES)}") from None


def load_schema(name: str) -> dict[str, Any]:
    """The schema of ``name`` as a mapping."""
    loaded: dict[str, Any] = json.loads(schema_path(name).read_text(encoding="utf-8"))
    return loaded


def field_rows(schema: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(field, type, description)`` for every documented field, depth first, in file order.

    Nested fields are dotted (``energy_kwh.cpu``); fields of list items end in ``[]``
    (``remote[].server``).
    """
    rows: list[tuple[str, str, str]] = []
    _walk(schema, "", rows)
    return rows


def _walk(node: Mapping[str, Any], prefix: str, rows: list[tuple[str, str, str]]) -> None:
    for name, sub in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        rows.append((path, _type(sub), str(sub.get("description", ""))))
        _walk(sub, f"{path}.", rows)
        items = sub.get("items")
        if isinstance(items, Mapping):
            _walk(items, f"{path}[].", rows)


def _type(node: Mapping[str, Any]) -> str:
    if "const" in node:
        return f"`{json.dumps(node['const'], allow_nan=False)}`"
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v, allow_nan=False)}`" for v in node["enum"])
    kinds = node.get("type", "any")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    names = {"number": "float", "integer": "integer", "string": "string", "boolean": "boolean"}
    words = []
    for kind in kinds:
        if kind == "array":
            items = node.get("items", {})
            inner = _type(items) if isinstance(items, Mapping) and items else "any"
            words.append(f"array of {inner}")
        elif kind == "object" and isinstance(node.get("additionalProperties"), Mapping):
            words.append(f"object of {_type(node['additionalProperties'])}")
        else:
            words.append(names.get(kind, kind))
    return " or ".join(words)


def markdown_table(name: str = "record") -> str:
    """The fields of schema ``name`` as a Markdown table (no trailing newline)."""
    lines = ["| Field | Type | Description |", "|---|---|---|"]
    for path, kind, text in field_rows(load_schema(name)):
        cell = text.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{path}` | {kind} | {cell} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table of the schema named in ``argv`` (``record`` by default)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0] not in SCHEMA_FILES):
        print(
            f"usage: python -m carbonpipe.schemas.table [{'|'.join(SCHEMA_FILES)}]", file=sys.stderr
        )
        return 2
    print(markdown_table(args[0] if args else "record"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
