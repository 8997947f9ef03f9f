"""carbonpipe._private.private_temp_file: what tempfile.mkstemp gives, without loading tempfile."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from carbonpipe._private import private_temp_file


def test_each_file_is_new_this_users_alone_and_in_the_folder(tmp_path: Path) -> None:
    made = [private_temp_file(tmp_path, "entry.", ".part") for _ in range(50)]
    paths = {path for _, path in made}
    assert len(paths) == 50  # every name drawn afresh
    for fd, path in made:
        os.write(fd, b"x")
        os.close(fd)
        assert Path(path).parent == tmp_path and Path(path).name.startswith("entry.")
        assert path.endswith(".part")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_file_is_not_inherited_by_a_command_the_step_starts(tmp_path: Path) -> None:
    fd, _ = private_temp_file(tmp_path, "entry.", ".part")
    try:
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)


def test_a_folder_that_is_not_there_raises_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        private_temp_file(tmp_path / "missing", "x.", ".part")
