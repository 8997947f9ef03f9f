"""carbon.yaml read under caps: file size, aliases, nesting and the size of the expanded document.

A YAML alias is a pointer, so a few hundred bytes of anchors and aliases ("billion laughs")
stand for a document of billions of nodes: harmless while shared, fatal once anything walks
or prints it. :func:`load_file` refuses, with :class:`UnsafeYAML` (a ``ValueError``), a file
over :data:`MAX_BYTES`, bytes that are not UTF-8, more than :data:`MAX_ALIASES` aliases, a
recursive alias, nesting deeper than :data:`MAX_DEPTH`, or a document that would expand to
more than :data:`MAX_NODES` nodes. Otherwise it is ``yaml.safe_load``.

Raises no carbonpipe error itself (it sits below :mod:`carbonpipe.errors`' users): callers say
which file and turn it into a ``ConfigError``. ``yaml`` is imported on the first load.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["MAX_ALIASES", "MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "UnsafeYAML", "load_file", "loads"]

MAX_BYTES = 1024 * 1024
MAX_ALIASES = 50
MAX_DEPTH = 64
MAX_NODES = 100_000


class UnsafeYAML(ValueError):
    """The file is refused before it is used; the message says which cap it broke."""


def load_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES) -> Any:
    """Read and parse a YAML file under the caps; see the module docstring.

    Raises:
        UnsafeYAML: The file breaks a cap or is not UTF-8.
        yaml.YAMLError: The text is not valid YAML.
        OSError: The file cannot be read.
    """
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise UnsafeYAML(f"larger than {max_bytes} bytes; a carbon.yaml is a few lines of settings")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnsafeYAML(
            f"not UTF-8 text (byte {raw[exc.start : exc.start + 1]!r} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None
    return loads(text)


def loads(text: str) -> Any:
    """Parse YAML text under the alias, depth and expanded-size caps."""
    import yaml

    class _Loader(yaml.SafeLoader):
        """SafeLoader whose composer counts aliases, depth and expanded nodes as it goes."""

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._aliases = 0
            self._depth = 0
            self._expanded = 0
            self._sizes: dict[int, int] = {}

        def _grow(self, nodes: int) -> None:
            self._expanded += nodes
            if self._expanded > MAX_NODES:
                raise UnsafeYAML(
                    f"its aliases expand it to more than {MAX_NODES} values; write the values out"
                )

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self._aliases += 1
                if self._aliases > MAX_ALIASES:
                    raise UnsafeYAML(
                        f"more than {MAX_ALIASES} aliases (*name); write the values out"
                    )
                node = super().compose_node(parent, index)
                size = self._sizes.get(id(node))
                if size is None:
                    raise UnsafeYAML("an alias refers to a value that holds it (a recursive alias)")
                self._grow(size)
                return node
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise UnsafeYAML(f"nested deeper than {MAX_DEPTH} levels")
            before = self._expanded
            self._grow(1)
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            self._sizes[id(node)] = self._expanded - before
            return node

    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
