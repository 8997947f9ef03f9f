"""The step identity check ``carbonpipe run`` makes before anything else is loaded.

Imports nothing, like :mod:`carbonpipe.stores.uri` and :mod:`carbonpipe.location.providers`,
whose checks the wrapper runs at the same moment.
"""

from __future__ import annotations


def check_attempt(attempt: object, *, name: str = "attempt") -> None:
    """Refuse an attempt number that is not an integer >= 1 (``None``: the next attempt)."""
    if attempt is not None and (
        isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1
    ):
        raise ValueError(f"{name} must be an integer >= 1, got {attempt!r}")


IDENTITY_MAX_CHARS = 200
# The identity settings a record carries, in the order they are checked.
IDENTITY_FIELDS = ("project", "experiment", "pipeline", "team", "run_id")


def check_identity(name: str, value: object) -> None:
    """Refuse an identity value no store key can be made from: over 200 characters, or one
    holding a control character or a lone surrogate (``name`` says where it came from)."""
    if not isinstance(value, str):
        return  # types are checked where the value is taken
    if len(value) > IDENTITY_MAX_CHARS:
        raise ValueError(
            f"{name} is {len(value)} characters long ({value[:24]!r}...); give at most "
            f"{IDENTITY_MAX_CHARS} characters"
        )
    for i, char in enumerate(value):
        code = ord(char)
        if code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000:
            raise ValueError(
                f"{name} {value[:60]!r} holds the control character {char!r} at position {i}; "
                "remove it (names are one line of printable text)"
            )


def check_identity_settings(
    settings: object, given_as: dict[str, str], labels: object = None
) -> None:
    """Check the identity fields of resolved settings and the label keys, naming each the way
    the user gave it: ``given_as[field]`` for an argument, else its env var or config file."""
    sources = getattr(settings, "sources", {})
    for field in IDENTITY_FIELDS:
        source = sources.get(field)
        if source == "env":
            where = f"CARBONPIPE_{field.upper()}"
        elif source == "file":
            where = f"{field} in {getattr(settings, 'config_file', None) or 'carbon.yaml'}"
        elif source == "project":
            where = f"{field} (the project's name, its default)"
        else:
            where = given_as.get(field, field)
        check_identity(where, getattr(settings, field, None))
    check_label_keys(labels, given_as.get("labels", "labels"))


def check_label_keys(labels: object, name: str = "labels") -> None:
    """Check each key of a labels mapping with :func:`check_identity`."""
    keys = getattr(labels, "keys", None)
    for key in keys() if callable(keys) else ():
        check_identity(f"{name} key", key)
