"""carbon.yaml is read under caps: a hostile file is a ConfigError (exit 2), quickly.

Each case runs ``carbonpipe run --config FILE -- CMD`` as a user does, in a subprocess; the
command must not start, and the message must name the file and stay short.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonpipe._safejson import short_repr
from carbonpipe._safeyaml import MAX_ALIASES, MAX_BYTES, UnsafeYAML, loads
from carbonpipe.config import resolve_settings
from carbonpipe.errors import ConfigError

CLI = [sys.executable, "-m", "carbonpipe"]
WHERE = ["--provider", "gcp", "--region", "europe-west1"]


def billion_laughs(key: str = "pue") -> str:
    """Nine levels of nine aliases each under one scalar setting: 9**9 values once expanded."""
    parts = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghi":
        parts.append(f"&{name} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = name
    parts.append(f"*{previous}")
    return f"{key}: [{', '.join(parts)}]\n"


def run_with_config(tmp_path: Path, config: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    marker = tmp_path / "ran"
    started = time.monotonic()
    proc = subprocess.run(
        [
            *CLI,
            "run",
            "--config",
            str(config),
            "--store",
            str(tmp_path / "store"),
            *WHERE,
            "--",
            sys.executable,
            "-c",
            f"open({str(marker)!r}, 'w')",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert not marker.exists(), "the command ran despite a refused carbon.yaml"
    return proc, elapsed


@pytest.mark.parametrize("key", ["pue", "project", "tracking_mode", "store", "location"])
def test_billion_laughs_exits_2_quickly_with_a_config_error(tmp_path: Path, key: str) -> None:
    config = tmp_path / "carbon.yaml"
    config.write_text(billion_laughs(key))
    assert config.stat().st_size < 1024
    proc, elapsed = run_with_config(tmp_path, config)
    assert proc.returncode == 2, proc.stderr
    assert elapsed < 5.0
    assert str(config) in proc.stderr and "aliases" in proc.stderr
    assert len(proc.stderr) < 1000


def test_more_than_the_alias_limit_is_refused_even_when_small(tmp_path: Path) -> None:
    aliases = ", ".join(["*a"] * (MAX_ALIASES + 1))
    config = tmp_path / "carbon.yaml"
    config.write_text(f"project: &a x\nlabels_unused: [{aliases}]\n")
    with pytest.raises(ConfigError, match=f"more than {MAX_ALIASES} aliases"):
        resolve_settings(config_file=config)
    # A few aliases, as people use them, are fine.
    config.write_text("project: &p shop\npipeline: *p\n")
    assert resolve_settings(config_file=config).pipeline == "shop"


def test_non_utf8_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "carbon.yaml"
    config.write_bytes(b"project: caf\xe9\nteam: \xff\xfe\n")
    proc, _ = run_with_config(tmp_path, config)
    assert proc.returncode == 2, proc.stderr
    assert str(config) in proc.stderr and "not UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_oversized_file_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "carbon.yaml"
    config.write_text("project: big\n" + "# padding\n" * (MAX_BYTES // 10 + 1))
    assert config.stat().st_size > MAX_BYTES
    proc, elapsed = run_with_config(tmp_path, config)
    assert proc.returncode == 2, proc.stderr
    assert f"larger than {MAX_BYTES} bytes" in proc.stderr
    assert elapsed < 10.0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param("a: &a [*a]\n", "recursive alias", id="recursive-alias"),
        pytest.param("pue: " + "[" * 100 + "]" * 100 + "\n", "deeper than 64", id="deep"),
    ],
)
def test_other_hostile_shapes_are_config_errors(tmp_path: Path, text: str, match: str) -> None:
    config = tmp_path / "carbon.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=match):
        resolve_settings(config_file=config)


def test_a_huge_value_is_shown_cut_short_in_the_message(tmp_path: Path) -> None:
    config = tmp_path / "carbon.yaml"
    config.write_text("pue: [" + ", ".join(["'" + "x" * 1000 + "'"] * 1000) + "]\n")
    with pytest.raises(ConfigError) as caught:
        resolve_settings(config_file=config)
    assert "pue" in str(caught.value) and len(str(caught.value)) < 300


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.integers() | st.floats() | st.text(max_size=500) | st.binary(max_size=50),
        lambda inner: st.lists(inner, max_size=50) | st.dictionaries(st.text(), inner, max_size=20),
        max_leaves=200,
    ),
    st.integers(min_value=10, max_value=200),
)
def short_repr_property(value: object, limit: int) -> None:
    shown = short_repr(value, limit)
    assert len(shown) <= limit
    if isinstance(value, (int, str, bytes)) and len(repr(value)) <= limit:
        assert shown == repr(value)


def test_short_repr_is_never_longer_than_its_limit() -> None:
    # Run in a fresh interpreter: hypothesis refuses a draw during which the global random state
    # changed, and late in the suite some SDK's retry thread left over from an earlier test
    # (their backoff jitter uses the global random module) may do that at any moment.
    code = "from tests.test_config_caps import short_repr_property; short_repr_property()"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=400),
        st.lists(
            st.sampled_from(["a: ", "&x ", "*x", "[", "]", "{", "}", ", ", "1", "'s'", "\n", "- "]),
            max_size=60,
        ).map("".join),
    )
)
def test_loads_is_safe_load_within_the_caps(text: str) -> None:
    """Any text: the same value as yaml.safe_load, or UnsafeYAML / a YAML error, nothing else."""
    import yaml

    try:
        value = loads(text)
    except UnsafeYAML:
        return
    except yaml.YAMLError:
        with pytest.raises(yaml.YAMLError):
            yaml.safe_load(text)
        return
    assert value == yaml.safe_load(text) or value != value  # NaN is not equal to itself
