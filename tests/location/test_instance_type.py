"""The instance type: asked in the same metadata pass as the region, overridable, with its source.

Every probe goes to a loopback server from :mod:`tests.metadata_servers`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.errors import ConfigError
from carbonpipe.location.detect import Location, clear_cache, detect_location
from tests import metadata_servers as _servers
from tests.metadata_servers import (
    DMI_AWS,
    DMI_AZURE,
    DMI_GCP,
    DMI_LAPTOP,
    INSTANCE_TYPES,
    CloudMetadata,
)

cloud_metadata = _servers.cloud_metadata
metadata_servers = _servers.metadata_servers

DMI_FOR = {"gcp": DMI_GCP, "aws": DMI_AWS, "azure": DMI_AZURE}


@pytest.fixture(autouse=True)
def _fresh_cloud_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def detect(**kwargs: Any) -> Location:
    kwargs.setdefault("deadline_s", 2.0)
    return detect_location(**kwargs)


@pytest.mark.parametrize("provider", ["gcp", "aws", "azure"])
def test_each_provider_names_the_instance_type(
    cloud_metadata: CloudMetadata, provider: str
) -> None:
    cloud_metadata.write_dmi(DMI_FOR[provider])

    found = detect()

    assert found.provider == provider
    assert found.instance_type == INSTANCE_TYPES[provider]
    assert found.instance_type_by == "metadata"
    assert found.to_dict()["instance_type"] == INSTANCE_TYPES[provider]


def test_all_three_probed_at_once_still_bring_the_type(cloud_metadata: CloudMetadata) -> None:
    # DMI unreadable: all three are asked; the first region wins and brings its own type.
    found = detect()

    assert found.instance_type == INSTANCE_TYPES[found.provider or ""]


@pytest.mark.parametrize("provider", ["gcp", "aws", "azure"])
def test_a_missing_type_leaves_the_region_and_a_note(
    cloud_metadata: CloudMetadata, provider: str
) -> None:
    cloud_metadata.write_dmi(DMI_FOR[provider])
    cloud_metadata.servers[provider].instance_type = None  # the path answers 404

    found = detect()

    assert found.detected_by == "metadata" and found.region
    assert found.instance_type is None if provider != "aws" else found.instance_type_by == "dmi"
    assert any("instance type: HTTP 404" in n for n in found.notes)


def test_aws_nitro_dmi_names_the_type_when_the_server_does_not(
    cloud_metadata: CloudMetadata,
) -> None:
    cloud_metadata.write_dmi(DMI_AWS)  # product_name m6i.large
    cloud_metadata.aws.instance_type = None

    found = detect()

    assert (found.instance_type, found.instance_type_by) == ("m6i.large", "dmi")


def test_a_malformed_type_is_refused(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_AZURE)
    cloud_metadata.azure.instance_type = "Standard D4 <script>"

    found = detect()

    assert found.region == "westeurope" and found.instance_type is None
    assert any("instance type rejected" in n for n in found.notes)


def test_argument_beats_env_beats_metadata(
    cloud_metadata: CloudMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud_metadata.write_dmi(DMI_GCP)

    monkeypatch.setenv("CARBONPIPE_INSTANCE_TYPE", "a2-highgpu-1g")
    by_env = detect()
    assert (by_env.instance_type, by_env.instance_type_by) == ("a2-highgpu-1g", "env")
    assert by_env.region == "europe-west1"  # the region still comes from metadata

    by_arg = detect(instance_type="a3-highgpu-8g")
    assert (by_arg.instance_type, by_arg.instance_type_by) == ("a3-highgpu-8g", "argument")

    by_config = detect(instance_type="c2-standard-4", instance_type_by="config")
    assert by_config.instance_type_by == "config"


def test_a_bad_override_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="instance_type"):
        detect(instance_type="m5 large;rm", probe=False)
    monkeypatch.setenv("CARBONPIPE_INSTANCE_TYPE", "../../etc")
    with pytest.raises(ConfigError, match="CARBONPIPE_INSTANCE_TYPE"):
        detect(probe=False)


def test_off_the_cloud_there_is_no_type(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_LAPTOP)

    found = detect()

    assert found.instance_type is None and found.instance_type_by is None
    assert sum(s.count for s in cloud_metadata.servers.values()) == 0


def test_the_type_is_cached_with_the_region(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_AZURE)
    detect()
    clear_cache(disk=False)  # a new process reads the disk cache

    again = detect()

    assert again.instance_type == "Standard_D4s_v3"
    assert cloud_metadata.azure.count == 2


@pytest.mark.parametrize("provider", ["gcp", "aws", "azure"])
def test_a_late_type_leaves_the_region_within_the_same_deadline(
    cloud_metadata: CloudMetadata, provider: str
) -> None:
    import time

    cloud_metadata.write_dmi(DMI_FOR[provider])
    server = cloud_metadata.servers[provider]
    server.instance_type_delay_s = 5.0  # the region comes back, the type never in time

    started = time.perf_counter()
    found = detect(deadline_s=0.5, use_cache=False)

    assert time.perf_counter() - started < 0.5 + 0.5  # one deadline for both, plus slack
    assert found.detected_by == "metadata" and found.region
    assert found.instance_type is None or found.instance_type_by == "dmi"
    assert f"{provider}: instance type: no answer in time" in found.notes
    server.reset()  # frees the held handler


def test_a_late_type_is_not_cached_on_disk(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_GCP)
    cloud_metadata.gcp.instance_type_delay_s = 5.0
    detect(deadline_s=0.3)
    cloud_metadata.gcp.reset()
    clear_cache(disk=False)  # a new process: only the disk cache is left

    again = detect()

    assert again.instance_type == INSTANCE_TYPES["gcp"]
    cache = Path(os.environ["CARBONPIPE_CACHE_DIR"])
    assert len(list(cache.glob("cloud-*.json"))) == 1  # the complete answer, written now
