"""The JSON Schemas (draft 2020-12) of the documents carbonpipe stores, shipped with the package.

``record.v2.json`` (``carbonpipe.record/2``, a step record), ``charge.v2.json`` (a budget
ledger charge), ``baseline.v1.json`` (a step's baseline) and ``esg_report.v1.json`` (the ESG
``report.json``): each file's ``$id`` and ``schema`` constant carry the version the documents
say they are. Every field is documented once, there; ``python -m carbonpipe.schemas.table``
prints a schema's fields as the Markdown table the README holds.

May import: nothing of carbonpipe (the bottom layer, beside :mod:`carbonpipe.record`).
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

TYPE_CHECKING = False

_EXPORTS: dict[str, str] = {
    "SCHEMA_FILES": "carbonpipe.schemas.table",
    "field_rows": "carbonpipe.schemas.table",
    "load_schema": "carbonpipe.schemas.table",
    "markdown_table": "carbonpipe.schemas.table",
    "schema_path": "carbonpipe.schemas.table",
}

__all__ = [
    "SCHEMA_FILES",
    "field_rows",
    "load_schema",
    "markdown_table",
    "schema_path",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

if TYPE_CHECKING:
    from carbonpipe.schemas.table import (
        SCHEMA_FILES,
        field_rows,
        load_schema,
        markdown_table,
        schema_path,
    )
