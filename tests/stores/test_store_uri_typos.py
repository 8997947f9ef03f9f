"""A store URI whose scheme is mistyped is refused, never turned into a local folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonpipe.errors import InvalidStoreURI
from carbonpipe.stores.uri import parse_store_uri

CLI = [sys.executable, "-m", "carbonpipe"]
ACCEPTED = ("s3://bucket[/prefix]", "gs://bucket[/prefix]", "local folder path", "file:///")

MISTYPED = [
    pytest.param("s3:/x", "s3://BUCKET[/PREFIX]", id="s3-one-slash"),
    pytest.param("s3:x", "s3://BUCKET[/PREFIX]", id="s3-no-slash"),
    pytest.param("s3//x", "s3://BUCKET[/PREFIX]", id="s3-no-colon"),
    pytest.param("s3:\\x", "s3://BUCKET[/PREFIX]", id="s3-backslash"),
    pytest.param("S3://my-bucket", "s3://BUCKET[/PREFIX]", id="s3-upper"),
    pytest.param("s3a:/x", "s3://BUCKET[/PREFIX]", id="s3a"),
    pytest.param("gs:x", "gs://BUCKET[/PREFIX]", id="gs-no-slash"),
    pytest.param("gs:/bucket/p", "gs://BUCKET[/PREFIX]", id="gs-one-slash"),
    pytest.param("gs//bucket", "gs://BUCKET[/PREFIX]", id="gs-no-colon"),
    pytest.param("GS://my-bucket", "gs://BUCKET[/PREFIX]", id="gs-upper"),
    pytest.param("gcs:/x", "gs://BUCKET[/PREFIX]", id="gcs-one-slash"),
    pytest.param("Gcs://my-bucket", "gs://BUCKET[/PREFIX]", id="gcs-mixed-case"),
    pytest.param("file:records", "file://PATH", id="file-no-slash"),
    pytest.param("FILE:///tmp/x", "file://PATH", id="file-upper"),
]
# file:// naming no folder is refused too (it used to mean the working directory by accident).
EMPTY_FILE_URI = "file://"


@pytest.mark.parametrize(("uri", "form"), MISTYPED)
def test_mistyped_schemes_are_refused_naming_the_accepted_forms(uri: str, form: str) -> None:
    with pytest.raises(InvalidStoreURI) as info:
        parse_store_uri(uri)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert repr(uri) in message and form in message
    assert all(accepted in message for accepted in ACCEPTED), message


def test_a_file_uri_naming_no_folder_is_refused() -> None:
    with pytest.raises(InvalidStoreURI, match="names no folder"):
        parse_store_uri(EMPTY_FILE_URI)


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        pytest.param("file:///abs/records", ("file", "/abs/records", ""), id="file-uri"),
        pytest.param("/abs/records", ("file", "/abs/records", ""), id="absolute"),
        pytest.param("records", ("file", "records", ""), id="relative"),
        pytest.param("s3/records", ("file", "s3/records", ""), id="folder-named-s3"),
        pytest.param("./s3:/x", ("file", "./s3:/x", ""), id="dot-slash-escape"),
        pytest.param("gs-records", ("file", "gs-records", ""), id="folder-starting-gs"),
        pytest.param("gcs://my-bucket/p", ("gs", "my-bucket", "p"), id="gcs-alias"),
        pytest.param("s3://my-bucket/p/", ("s3", "my-bucket", "p"), id="s3"),
    ],
)
def test_well_formed_uris_and_local_paths_still_work(
    uri: str, parsed: tuple[str, str, str]
) -> None:
    assert parse_store_uri(uri) == parsed


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(["s3", "gs", "gcs", "S3", "Gs", "file", "az", "AZ", "azure"]),
    glue=st.sampled_from([":", ":/", "//", ":\\", ":\\\\"]),
    rest=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_/.", max_size=30),
)
def test_no_broken_scheme_is_ever_read_as_a_local_folder(scheme: str, glue: str, rest: str) -> None:
    uri = scheme + glue + rest
    try:
        parsed = parse_store_uri(uri)
    except InvalidStoreURI:
        return
    # Only a well-formed s3://, gs://, az:// or file:// URI gets through, never a folder "s3:".
    assert uri.startswith(("s3://", "gs://", "gcs://", "az://", "azure://", "file://")), (
        uri,
        parsed,
    )
    assert parsed[1], (uri, parsed)


@pytest.mark.parametrize("uri", ["s3:/x", "gs:x", "s3//x", "S3://my-bucket"])
def test_cli_refuses_a_mistyped_store_and_creates_no_folder(tmp_path: Path, uri: str) -> None:
    marker = tmp_path / "ran"
    out = subprocess.run(
        [*CLI, "run", "--store", uri, "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=dict(os.environ),
    )
    assert out.returncode == 2, out.stderr
    assert "s3://bucket[/prefix]" in out.stderr and repr(uri) in out.stderr
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no ./s3:/x, no spool, nothing
