"""Settings resolution: arguments > CARBONPIPE_* env > carbon.yaml, with sources shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from carbonpipe.config import resolve_settings
from carbonpipe.errors import ConfigError


def test_defaults_without_any_configuration() -> None:
    s = resolve_settings()
    assert s.store == "./carbon-artifacts"
    assert s.project == "default"
    assert s.pipeline == "default"
    assert s.tracking_mode == "machine"
    assert s.pue == 1.0
    assert s.config_file is None


def test_precedence_argument_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "carbon.yaml"
    cfg.write_text("project: from-file\nteam: file-team\npue: 1.2\nstore: s3://file-bucket/x\n")
    monkeypatch.setenv("CARBONPIPE_CONFIG", str(cfg))
    monkeypatch.setenv("CARBONPIPE_TEAM", "env-team")
    monkeypatch.setenv("CARBONPIPE_PUE", "1.1")
    s = resolve_settings(pue=1.5)
    assert (s.project, s.sources["project"]) == ("from-file", "file")
    assert (s.team, s.sources["team"]) == ("env-team", "env")
    assert (s.pue, s.sources["pue"]) == (1.5, "argument")
    assert s.store == "s3://file-bucket/x"
    assert s.pipeline == "from-file"
    shown = s.to_dict()
    assert shown["team"] == {"value": "env-team", "source": "env"}


def test_location_default_comes_from_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "carbon.yaml"
    cfg.write_text("location: {provider: gcp, region: europe-west1}\n")
    s = resolve_settings(config_file=cfg)
    assert (s.default_provider, s.default_region, s.default_country) == (
        "gcp",
        "europe-west1",
        None,
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param("pue: 0.5\n", "pue .* between 1.0 and 3.0", id="pue-range"),
        pytest.param("pue: lots\n", "pue .* must be a number", id="pue-type"),
        pytest.param(
            "tracking_mode: gpu\n", "tracking_mode .* machine, process, offline", id="mode"
        ),
        pytest.param("colour: blue\n", r"unknown key\(s\) \['colour'\]", id="unknown-key"),
        pytest.param("- a\n- b\n", "top level must be a mapping", id="not-mapping"),
        pytest.param("location: {city: Paris}\n", "location has unknown key", id="location-key"),
        pytest.param("project: [1\n", "not valid YAML", id="yaml"),
    ],
)
def test_bad_file_names_the_field(tmp_path: Path, text: str, match: str) -> None:
    cfg = tmp_path / "carbon.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match):
        resolve_settings(config_file=cfg)


def test_bad_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARBONPIPE_MEASURE_POWER_SECS", "0")
    with pytest.raises(ConfigError, match="CARBONPIPE_MEASURE_POWER_SECS"):
        resolve_settings()


def test_unknown_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="colour"):
        resolve_settings(colour="blue")


def _config_json(env: dict[str, str]) -> dict:
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "carbonpipe", "config", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    return json.loads(out.stdout)


def test_carbonpipe_config_shows_that_the_default_pue_is_the_places_not_one() -> None:
    """A user reading ``carbonpipe config`` must not believe every step is priced at PUE 1.0."""
    pue = _config_json({k: v for k, v in os.environ.items() if k != "CARBONPIPE_PUE"})["pue"]
    assert pue["value"] == "by place" and "fleet" in pue["source"]
    given = _config_json({**os.environ, "CARBONPIPE_PUE": "1.3"})
    assert given["pue"]["value"] == 1.3
