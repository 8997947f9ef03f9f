"""Private folders: the spool and the hardware cache must be this user's alone, as ``~/.ssh`` is.

Anyone who can write into the spool can plant an envelope a replay would deliver; anyone who can
write into the hardware cache can plant a profile that skews every measurement on the machine.
So, like ssh's ``StrictModes``, carbonpipe uses such a folder only when it is owned by this user
(or by root) and no one else can write to it. A missing folder is created ``0700``.

Imports only :mod:`carbonpipe.errors`, so the stores and the meter can both use it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from carbonpipe.errors import UnsafeFolder

__all__ = ["ensure_private_dir", "folder_problem", "private_temp_file"]


def folder_problem(path: Path) -> str | None:
    """Why ``path`` (an existing folder) is not private enough, or None when it is."""
    st = os.stat(path)  # follows a symlink: the folder it names is the one checked
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    uid = os.geteuid()
    if st.st_uid not in (uid, 0):
        return f"is owned by uid {st.st_uid}, not by this user (uid {uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def ensure_private_dir(
    path: str | os.PathLike[str], *, what: str, env: str, create: bool = True
) -> Path:
    """Return ``path``, created ``0700`` if missing; raise :class:`UnsafeFolder` if it is not private.

    ``what`` names the folder in the message ("spool folder") and ``env`` the variable that
    moves it, so the message gives both fixes. With ``create=False`` a missing folder is
    returned as it is (a reader has nothing to read there).
    """
    folder = Path(path)
    if not create and not folder.exists():
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    problem = folder_problem(folder)
    if problem is not None:
        if "writable" in problem:
            fix = f"`chmod 700 {folder}`"
        elif "owned" in problem:
            fix = f"`chown {os.geteuid()} {folder} && chmod 700 {folder}`"
        else:
            fix = f"remove {folder}"
        raise UnsafeFolder(
            f"{what} {folder} {problem}; carbonpipe refuses it, as ssh refuses a loose ~/.ssh "
            f"(others could plant entries there). Fix: {fix}, or set {env} to a folder only "
            "you can write"
        )
    return folder


def private_temp_file(folder: str | os.PathLike[str], prefix: str, suffix: str) -> tuple[int, str]:
    """Create a new file in ``folder`` that only this user can read: ``(fd, path)``.

    What ``tempfile.mkstemp`` does (``O_EXCL``, mode 0600, a random name, no symlink followed),
    without loading ``tempfile`` and, with it, ``random``, ``shutil`` and the compression modules:
    a step's start and stop write such files, and pay for every module they import.
    """
    for _ in range(16):
        path = os.path.join(folder, f"{prefix}{os.urandom(8).hex()}{suffix}")
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")
