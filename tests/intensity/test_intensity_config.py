"""The intensity source in carbonpipe's settings: env > carbon.yaml, refused early when unknown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carbonpipe.config import resolve_settings
from carbonpipe.errors import ConfigError


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "carbon.yaml"
    path.write_text(text)
    return path


def test_default_is_the_table() -> None:
    s = resolve_settings()
    assert s.intensity_source == "table" and s.intensity == {}


def test_carbon_yaml_intensity_block(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "intensity: {source: ElectricityMaps, timeout_s: 3, zone: BE}\n")
    s = resolve_settings(config_file=path)
    assert s.intensity_source == "electricitymaps"
    assert s.intensity == {"timeout_s": 3.0, "zone": "BE"}
    assert s.sources["intensity_source"] == "file"


def test_env_wins_and_file_keeps_its_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _yaml(tmp_path, "intensity: {source: uk}\n")
    monkeypatch.setenv("CARBONPIPE_INTENSITY_SOURCE", "file:/data/zones.csv")
    monkeypatch.setenv("CARBONPIPE_INTENSITY_ZONE", "DE")
    s = resolve_settings(config_file=path)
    assert s.intensity_source == "file:/data/zones.csv" and s.sources["intensity_source"] == "env"
    assert s.intensity == {"zone": "DE"}


def test_unknown_source_is_refused_with_the_nearest_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARBONPIPE_INTENSITY_SOURCE", "wattime")
    with pytest.raises(ConfigError, match="did you mean watttime"):
        resolve_settings()
    monkeypatch.delenv("CARBONPIPE_INTENSITY_SOURCE")
    with pytest.raises(ConfigError, match="intensity.source.*did you mean electricitymaps"):
        resolve_settings(config_file=_yaml(tmp_path, "intensity: {source: electricitymap}\n"))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("intensity: {source: uk, zone_id: 3}\n", "intensity.zone_id.*did you mean zone"),
        ("intensity: {source: watttime, password: hunter22}\n", "environment only"),
        ("intensity: {source: uk, timeout_s: 0}\n", "at most 60"),
        ("intensity: {source: uk, timeout_s: soon}\n", "must be a number"),
        ("intensity: uk\n", "must be a mapping"),
        ("intensity: {url: 'https://me:pw@api.example'}\n", "must not hold credentials"),
    ],
)
def test_bad_intensity_blocks(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        resolve_settings(config_file=_yaml(tmp_path, text))
    assert "hunter22" not in str(info.value)


def test_carbonpipe_config_shows_the_source_and_no_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from carbonpipe.cli.app import main

    monkeypatch.setenv("ELECTRICITYMAPS_API_TOKEN", "em-token-never-shown-91")
    path = _yaml(tmp_path, "intensity: {source: electricitymaps, zone: BE}\n")
    assert main(["config", "--config", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["intensity_source"] == {"value": "electricitymaps", "source": "file"}
    assert data["intensity"]["value"] == {"zone": "BE"}
    assert "em-token-never-shown-91" not in out
