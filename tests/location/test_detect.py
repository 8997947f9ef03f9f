"""Cloud location: precedence, DMI gating, the three metadata protocols, the deadline, caching.

Every probe goes to a loopback server from :mod:`tests.metadata_servers`; none of these tests
can send a packet to the real link-local metadata address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.errors import ConfigError
from carbonpipe.location import detect as cloud
from carbonpipe.location import imds as _imds
from carbonpipe.location.detect import (
    DEFAULT_DEADLINE_S,
    Location,
    clear_cache,
    detect_location,
    normalize_country,
)
from carbonpipe.location.providers import CACHE_TTL_S, normalize_provider
from tests import metadata_servers as _servers
from tests.metadata_servers import (
    AWS_REGION,
    AZURE_REGION,
    DMI_AWS,
    DMI_AWS_XEN,
    DMI_AZURE,
    DMI_GCP,
    DMI_HYPERV,
    DMI_LAPTOP,
    CloudMetadata,
)

# The fixtures live beside the servers so any test module can take them the same way (or
# conftest can list tests.metadata_servers in pytest_plugins).
metadata_servers = _servers.metadata_servers
cloud_metadata = _servers.cloud_metadata
metadata_server_factory = _servers.metadata_server_factory

DMI_FOR = {"gcp": DMI_GCP, "aws": DMI_AWS, "azure": DMI_AZURE}
REGION_FOR = {"gcp": "europe-west1", "aws": AWS_REGION, "azure": AZURE_REGION}
# Generous against a loaded CI box; bench/bench_detect.py measures the real figure (< 60 ms).
DEADLINE_SLACK_S = 0.15
# A rejected answer ends the probe at once, long before the (test) deadline of 2 s.
PROMPT_S = 1.0


@pytest.fixture(autouse=True)
def _fresh_cloud_cache() -> Iterator[None]:
    """No answer cached by one test may decide another."""
    clear_cache()
    yield
    clear_cache()


def detect(**kwargs: Any) -> Location:
    """Detect with a deadline a loaded CI box cannot miss; the deadline tests pass their own."""
    kwargs.setdefault("deadline_s", 2.0)
    return detect_location(**kwargs)


def timed(**kwargs: Any) -> tuple[Location, float]:
    """Run detection and return it with the wall-clock seconds it took."""
    started = time.perf_counter()
    location = detect(**kwargs)
    return location, time.perf_counter() - started


# -- metadata servers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "dmi", "zone"),
    [
        pytest.param("gcp", DMI_GCP, "europe-west1-b", id="gcp"),
        pytest.param("aws", DMI_AWS, None, id="aws-nitro"),
        pytest.param("aws", DMI_AWS_XEN, None, id="aws-xen"),
        pytest.param("azure", DMI_AZURE, None, id="azure"),
    ],
)
def test_dmi_naming_a_cloud_probes_that_provider_only(
    cloud_metadata: CloudMetadata, provider: str, dmi: dict[str, str], zone: str | None
) -> None:
    cloud_metadata.write_dmi(dmi)

    location = detect()

    assert (location.provider, location.region, location.zone) == (
        provider,
        REGION_FOR[provider],
        zone,
    )
    assert location.detected_by == "metadata"
    assert location.notes == ()
    counts = cloud_metadata.counts()
    assert counts.pop(provider) >= 1
    assert counts == {name: 0 for name in counts}


@pytest.mark.parametrize(
    "dmi",
    [
        pytest.param(DMI_LAPTOP, id="laptop"),
        pytest.param(DMI_HYPERV, id="hyperv-without-azure-tag"),
        pytest.param({"sys_vendor": ""}, id="empty-strings"),
    ],
)
def test_dmi_that_names_no_cloud_sends_no_request(
    cloud_metadata: CloudMetadata, dmi: dict[str, str]
) -> None:
    cloud_metadata.write_dmi(dmi)

    location = detect()

    assert cloud_metadata.counts() == {"gcp": 0, "aws": 0, "azure": 0}
    assert (location.provider, location.detected_by, location.notes) == (None, "world", ())


@pytest.mark.parametrize("provider", [pytest.param(p, id=p) for p in ("gcp", "aws", "azure")])
def test_unreadable_dmi_finds_whichever_cloud_answers(
    cloud_metadata: CloudMetadata, provider: str
) -> None:
    cloud_metadata.refuse(*(p for p in ("gcp", "aws", "azure") if p != provider))

    location = detect()

    assert (location.provider, location.region) == (provider, REGION_FOR[provider])
    assert location.detected_by == "metadata"


def test_unreadable_dmi_probes_all_three_at_once(cloud_metadata: CloudMetadata) -> None:
    # Each server takes 100 ms to say 404: one after another would need 300 ms.
    for server in cloud_metadata.servers.values():
        server.behaviour = "not_found"
        server.delay_s = 0.1

    location, elapsed = timed(deadline_s=1.0)

    assert location.detected_by == "world"
    assert sorted(location.notes) == ["aws: HTTP 404", "azure: HTTP 404", "gcp: HTTP 404"]
    arrivals = [s.requests[0].at for s in cloud_metadata.servers.values()]
    assert max(arrivals) - min(arrivals) < 0.1
    assert elapsed < 0.25


def test_aws_is_asked_through_imdsv2_only(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_AWS)

    assert detect().region == AWS_REGION

    put, get, kind = cloud_metadata.aws.requests
    assert (put.method, put.path) == ("PUT", "/latest/api/token")
    assert 1 <= int(put.headers["x-aws-ec2-metadata-token-ttl-seconds"]) <= 21600
    assert (get.method, get.path) == ("GET", "/latest/meta-data/placement/region")
    assert get.headers["x-aws-ec2-metadata-token"] in cloud_metadata.aws.tokens
    # The instance type, in the same pass, with the same session token.
    assert (kind.method, kind.path) == ("GET", "/latest/meta-data/instance-type")
    assert kind.headers["x-aws-ec2-metadata-token"] == get.headers["x-aws-ec2-metadata-token"]


def test_gcp_and_azure_send_their_required_headers(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi({**DMI_GCP, "chassis_asset_tag": DMI_AZURE["chassis_asset_tag"]})
    cloud_metadata.gcp.behaviour = "not_found"  # so Azure is asked to the end as well

    assert detect().provider == "azure"

    # The probes run side by side: Azure's answer can end the detection before the GCP test
    # server has logged the request it already received.
    give_up = time.monotonic() + 10
    while not cloud_metadata.gcp.requests and time.monotonic() < give_up:
        time.sleep(0.01)
    assert cloud_metadata.gcp.requests[0].headers["metadata-flavor"] == "Google"
    azure = cloud_metadata.azure.requests[0]
    assert azure.headers["metadata"] == "true"
    assert azure.path.startswith("/metadata/instance/compute/location?api-version=")


@pytest.mark.parametrize("provider", [pytest.param(p, id=p) for p in ("gcp", "aws", "azure")])
def test_chunked_answers_are_decoded(cloud_metadata: CloudMetadata, provider: str) -> None:
    cloud_metadata.write_dmi(DMI_FOR[provider])
    cloud_metadata.servers[provider].chunked = True

    assert detect().region == REGION_FOR[provider]


def test_azure_json_location_is_accepted(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_AZURE)
    cloud_metadata.azure.azure_json = True

    assert detect().region == AZURE_REGION


# -- misbehaving servers: rejected, noted, never raised ---------------------------------------


@pytest.mark.parametrize(
    ("provider", "behaviour", "note"),
    [
        pytest.param("gcp", "html", "HTML answer rejected", id="gcp-html"),
        pytest.param("aws", "html", "HTML answer rejected", id="aws-html"),
        pytest.param("azure", "html", "HTML answer rejected", id="azure-html"),
        pytest.param("gcp", "error", "HTTP 500", id="gcp-500"),
        pytest.param("aws", "error", "HTTP 500", id="aws-500"),
        pytest.param("azure", "not_found", "HTTP 404", id="azure-404"),
        pytest.param("gcp", "huge", "body larger than 4096 bytes", id="gcp-huge"),
        pytest.param("aws", "huge", "body larger than 4096 bytes", id="aws-huge"),
    ],
)
def test_misbehaving_server_falls_back_with_a_note(
    cloud_metadata: CloudMetadata, provider: str, behaviour: str, note: str
) -> None:
    cloud_metadata.write_dmi(DMI_FOR[provider])
    cloud_metadata.servers[provider].behaviour = behaviour

    location, elapsed = timed()

    assert (location.provider, location.region, location.detected_by) == (None, None, "world")
    assert len(location.notes) == 1
    assert location.notes[0].startswith(f"{provider}: {note}")
    assert elapsed < PROMPT_S


@pytest.mark.parametrize(
    "announced", [pytest.param(True, id="content-length"), pytest.param(False, id="no-length")]
)
def test_huge_body_is_capped_not_downloaded(cloud_metadata: CloudMetadata, announced: bool) -> None:
    cloud_metadata.write_dmi(DMI_GCP)
    cloud_metadata.gcp.behaviour = "huge"
    cloud_metadata.gcp.chunked = not announced  # the huge mode's "send no length" switch

    location, elapsed = timed(deadline_s=5.0)

    assert location.notes == ("gcp: body larger than 4096 bytes",)
    assert elapsed < PROMPT_S


@pytest.mark.parametrize(
    "status",
    [pytest.param(301, id="301"), pytest.param(302, id="302"), pytest.param(307, id="307")],
)
def test_redirect_is_not_followed(
    cloud_metadata: CloudMetadata, metadata_server_factory: Any, status: int
) -> None:
    target = metadata_server_factory("gcp")
    cloud_metadata.write_dmi(DMI_GCP)
    cloud_metadata.gcp.behaviour = "redirect"
    cloud_metadata.gcp.redirect_status = status
    cloud_metadata.gcp.redirect_to = f"{target.url}/computeMetadata/v1/instance/zone"

    location = detect()

    assert location.detected_by == "world"
    assert location.notes[0].startswith(f"gcp: HTTP {status} redirect to ")
    assert target.count == 0


@pytest.mark.parametrize(
    ("provider", "answer"),
    [
        pytest.param("gcp", "<b>europe-west1-b</b>", id="gcp-markup"),
        pytest.param("gcp", "europe-west1", id="gcp-region-not-zone"),
        pytest.param("aws", "eu-west-1\nX-Injected: 1", id="aws-two-lines"),
        pytest.param("aws", "westeurope", id="aws-azure-shaped"),
        pytest.param("azure", "west europe", id="azure-space"),
        pytest.param("azure", "eu-west-1", id="azure-aws-shaped"),
    ],
)
def test_answer_with_the_wrong_shape_is_rejected(
    cloud_metadata: CloudMetadata, provider: str, answer: str
) -> None:
    cloud_metadata.write_dmi(DMI_FOR[provider])
    cloud_metadata.servers[provider].region = answer

    location = detect()

    assert location.region is None
    assert "rejected" in location.notes[0]


def test_gcp_answer_without_the_flavor_header_is_rejected(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_GCP)
    cloud_metadata.gcp.flavor_header = False

    location = detect()

    assert location.region is None
    assert location.notes == ("gcp: answer lacks the 'Metadata-Flavor: Google' header",)


@pytest.mark.parametrize(
    "behaviour",
    [pytest.param("hang", id="accepts-never-answers"), pytest.param("drip", id="drips-forever")],
)
def test_deadline_holds_when_servers_never_finish(
    cloud_metadata: CloudMetadata, behaviour: str
) -> None:
    for server in cloud_metadata.servers.values():
        server.behaviour = behaviour

    location, elapsed = timed(deadline_s=DEFAULT_DEADLINE_S)

    assert elapsed < DEADLINE_SLACK_S
    assert location.detected_by == "world"
    assert sorted(note.split(" (")[0] for note in location.notes) == [
        f"{p}: no answer before the deadline" for p in ("aws", "azure", "gcp")
    ]
    assert cloud_metadata.counts() == {"gcp": 1, "aws": 1, "azure": 1}


def test_aws_token_timeout_hints_at_the_hop_limit(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_AWS)
    cloud_metadata.aws.behaviour = "hang"

    location = detect(deadline_s=DEFAULT_DEADLINE_S)

    assert location.notes == (
        "aws: no answer before the deadline (from a container, IMDSv2 needs an instance hop "
        "limit of 2)",
    )


def test_shorter_deadline_is_honoured(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_GCP)
    cloud_metadata.gcp.behaviour = "hang"

    location, elapsed = timed(deadline_s=0.01)

    assert location.notes == ("gcp: no answer before the deadline",)
    assert elapsed < 0.01 + DEADLINE_SLACK_S / 2


def test_refused_connections_fall_back_without_raising(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.refuse("gcp", "aws", "azure")

    location = detect(default_provider="aws", default_region="us-east-1")

    assert (location.provider, location.region, location.detected_by) == (
        "aws",
        "us-east-1",
        "default",
    )
    assert len(location.notes) == 3
    assert all("refused" in note for note in location.notes)


# -- switches and endpoints ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [pytest.param(v, id=v) for v in ("off", "OFF", "false", "0", "no")]
)
def test_detection_switched_off_sends_nothing(
    cloud_metadata: CloudMetadata, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CARBONPIPE_CLOUD_DETECTION", value)

    location = detect()

    assert location.detected_by == "world"
    assert cloud_metadata.counts() == {"gcp": 0, "aws": 0, "azure": 0}


def test_probe_false_sends_nothing(cloud_metadata: CloudMetadata) -> None:
    assert detect(probe=False, default_country="FR").country_iso == "FRA"
    assert cloud_metadata.counts() == {"gcp": 0, "aws": 0, "azure": 0}


def test_unknown_detection_switch_is_a_config_error(
    cloud_metadata: CloudMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARBONPIPE_CLOUD_DETECTION", "sometimes")

    with pytest.raises(ConfigError, match="CARBONPIPE_CLOUD_DETECTION"):
        detect()


@pytest.mark.parametrize(
    "dmi",
    [pytest.param(DMI_AWS, id="dmi-says-aws"), pytest.param(None, id="dmi-unreadable")],
)
def test_aws_metadata_disabled_is_honoured(
    cloud_metadata: CloudMetadata, monkeypatch: pytest.MonkeyPatch, dmi: dict[str, str] | None
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "True")
    if dmi is not None:
        cloud_metadata.write_dmi(dmi)
    cloud_metadata.refuse("gcp", "azure")

    location = detect()

    assert cloud_metadata.aws.count == 0
    assert location.provider is None


@pytest.mark.parametrize(
    "variable",
    [pytest.param(v, id=v) for v in ("GCE_METADATA_HOST", "GCE_METADATA_ROOT", "GCE_METADATA_IP")],
)
def test_gce_endpoint_variables_are_read_like_google_auth(
    cloud_metadata: CloudMetadata, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    cloud_metadata.write_dmi(DMI_GCP)
    monkeypatch.delenv("GCE_METADATA_HOST")
    monkeypatch.setenv(variable, cloud_metadata.gcp.host_port)

    assert detect().provider == "gcp"


def test_endpoint_given_by_host_name_is_resolved(
    cloud_metadata: CloudMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud_metadata.write_dmi(DMI_AZURE)
    monkeypatch.setenv(
        "CARBONPIPE_AZURE_IMDS_ENDPOINT", f"http://localhost:{cloud_metadata.azure.port}/"
    )

    assert detect().provider == "azure"


def test_tls_endpoint_is_skipped_with_a_note(
    cloud_metadata: CloudMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud_metadata.write_dmi(DMI_AWS)
    monkeypatch.setenv(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT", f"https://{cloud_metadata.aws.host_port}"
    )

    location = detect()

    assert cloud_metadata.aws.count == 0
    assert location.notes[0].startswith("aws: not probed, AWS_EC2_METADATA_SERVICE_ENDPOINT=")


def test_default_endpoints_are_the_link_local_address(monkeypatch: pytest.MonkeyPatch) -> None:
    # Checked on the parsed endpoints: nothing is sent to the real address from a test.
    for name in (
        "GCE_METADATA_HOST",
        "GCE_METADATA_ROOT",
        "GCE_METADATA_IP",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_EC2_METADATA_DISABLED",
        "CARBONPIPE_AZURE_IMDS_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)

    endpoints, notes = _imds._endpoints(("gcp", "aws", "azure"))
    assert {p: e.url for p, e in endpoints.items()} == {
        "gcp": "http://169.254.169.254:80",
        "aws": "http://169.254.169.254:80",
        "azure": "http://169.254.169.254:80",
    }
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6")
    endpoints, notes = _imds._endpoints(("aws",))
    assert endpoints["aws"].url == "http://[fd00:ec2::254]:80"
    assert notes == []


# -- caches -------------------------------------------------------------------------------------


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("cloud-*.json")) if cache_dir.exists() else []


def test_answer_is_cached_in_the_process(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_GCP)

    first = detect()
    second = detect()

    assert first.region == second.region == "europe-west1"
    assert second.detected_by == "metadata"
    assert second.instance_type == "n2-standard-8"
    assert cloud_metadata.gcp.count == 2  # zone + machine type, once


def test_answer_is_cached_on_disk_for_the_next_process(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_AWS)
    cache_dir = Path(os.environ["CARBONPIPE_CACHE_DIR"])

    detect()
    clear_cache(disk=False)  # what a new process starts with
    again = detect()

    assert again.region == AWS_REGION
    assert again.instance_type == "m6i.large"
    assert cloud_metadata.aws.count == 3  # token + region + instance type, once
    assert len(_cache_files(cache_dir)) == 1


def test_disk_cache_expires_after_its_ttl(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_GCP)
    cache_dir = Path(os.environ["CARBONPIPE_CACHE_DIR"])
    detect()
    (path,) = _cache_files(cache_dir)
    data = json.loads(path.read_text())
    data["written_at"] -= CACHE_TTL_S + 1
    path.write_text(json.dumps(data))
    clear_cache(disk=False)

    assert detect().region == "europe-west1"
    assert cloud_metadata.gcp.count == 4


def test_tampered_disk_cache_is_ignored(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_GCP)
    cache_dir = Path(os.environ["CARBONPIPE_CACHE_DIR"])
    detect()
    (path,) = _cache_files(cache_dir)
    data = json.loads(path.read_text())
    data["region"] = "<script>"
    path.write_text(json.dumps(data))
    clear_cache(disk=False)

    assert detect().region == "europe-west1"
    assert cloud_metadata.gcp.count == 4


def test_cache_key_includes_the_endpoints(
    cloud_metadata: CloudMetadata, metadata_server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud_metadata.write_dmi(DMI_GCP)
    other = metadata_server_factory("gcp", region="asia-east1-a")

    assert detect().region == "europe-west1"
    monkeypatch.setenv("GCE_METADATA_HOST", other.host_port)
    assert detect().region == "asia-east1"


def test_doubtful_answer_is_not_written_to_disk(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_GCP)
    cloud_metadata.gcp.behaviour = "hang"
    cache_dir = Path(os.environ["CARBONPIPE_CACHE_DIR"])

    detect(deadline_s=0.02)

    assert _cache_files(cache_dir) == []


def test_use_cache_false_asks_every_time(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_AZURE)

    detect(use_cache=False)
    detect(use_cache=False)

    assert cloud_metadata.azure.count == 4
    assert _cache_files(Path(os.environ["CARBONPIPE_CACHE_DIR"])) == []


# -- precedence ---------------------------------------------------------------------------------

_ENV = {
    "provider": "CARBONPIPE_CLOUD_PROVIDER",
    "region": "CARBONPIPE_CLOUD_REGION",
    "country": "CARBONPIPE_COUNTRY",
}


@pytest.mark.parametrize(
    ("args", "env", "metadata", "expected"),
    [
        pytest.param(
            {"provider": "aws", "region": "us-east-1"},
            {"provider": "azure", "region": "northeurope"},
            True,
            ("aws", "us-east-1", "argument"),
            id="argument-beats-env-and-metadata",
        ),
        pytest.param(
            {},
            {"region": "northeurope"},
            True,
            ("azure", "northeurope", "env"),
            id="env-beats-metadata",
        ),
        pytest.param(
            {"default_provider": "azure", "default_region": "westus"},
            {},
            True,
            ("gcp", "europe-west1", "metadata"),
            id="metadata-beats-default",
        ),
        pytest.param(
            {"default_provider": "azure", "default_region": "westus"},
            {},
            False,
            ("azure", "westus", "default"),
            id="default-when-metadata-silent",
        ),
        pytest.param({}, {}, False, (None, None, "world"), id="world-when-nothing-known"),
        pytest.param(
            {"provider": "gcp"},
            {},
            True,
            ("gcp", "europe-west1", "metadata"),
            id="provider-argument-region-from-metadata",
        ),
        pytest.param(
            {"country_iso": "fr"},
            {"provider": "gcp"},
            True,
            ("gcp", None, "argument"),
            id="country-argument-settles-without-metadata",
        ),
    ],
)
def test_precedence(
    cloud_metadata: CloudMetadata,
    monkeypatch: pytest.MonkeyPatch,
    args: dict[str, Any],
    env: dict[str, str],
    metadata: bool,
    expected: tuple[str | None, str | None, str],
) -> None:
    cloud_metadata.write_dmi(DMI_GCP)
    if not metadata:
        cloud_metadata.refuse("gcp")
    for key, value in env.items():
        monkeypatch.setenv(_ENV[key], value)

    location = detect(**args)

    assert (location.provider, location.region, location.detected_by) == expected


def test_explicit_location_sends_no_request(cloud_metadata: CloudMetadata) -> None:
    detect(region="europe-west4")
    detect(country_iso="BE")

    assert cloud_metadata.counts() == {"gcp": 0, "aws": 0, "azure": 0}


def test_provider_argument_restricts_the_probe(cloud_metadata: CloudMetadata) -> None:
    location = detect(provider="aws")

    assert (location.provider, location.region) == ("aws", AWS_REGION)
    assert (cloud_metadata.gcp.count, cloud_metadata.azure.count) == (0, 0)


def test_provider_argument_against_dmi_sends_nothing(cloud_metadata: CloudMetadata) -> None:
    cloud_metadata.write_dmi(DMI_GCP)

    location = detect(provider="azure")

    assert (location.provider, location.region, location.detected_by) == (
        "azure",
        None,
        "argument",
    )
    assert cloud_metadata.counts() == {"gcp": 0, "aws": 0, "azure": 0}


def test_default_region_of_another_provider_is_ignored_with_a_note() -> None:
    location = detect(provider="gcp", default_region="eu-west-1", probe=False)

    assert (location.provider, location.region, location.detected_by) == ("gcp", None, "argument")
    assert location.notes == ("default region 'eu-west-1' ignored: it is aws's, not gcp's",)


@pytest.mark.parametrize(
    ("region", "provider"),
    [
        pytest.param("europe-west1", "gcp", id="gcp"),
        pytest.param("us-gov-west-1", "aws", id="aws-govcloud"),
        pytest.param("ap-southeast-2", "aws", id="aws"),
        pytest.param("EastUS2", "azure", id="azure-mixed-case"),
    ],
)
def test_region_alone_names_its_provider(region: str, provider: str) -> None:
    location = detect(region=region)

    assert (location.provider, location.region) == (provider, region.lower())
    assert location.detected_by == "argument"


@pytest.mark.parametrize(
    ("alias", "provider"),
    [
        pytest.param("Google", "gcp", id="google"),
        pytest.param("AMAZON", "aws", id="amazon"),
        pytest.param("microsoft", "azure", id="microsoft"),
        pytest.param(" gcp ", "gcp", id="padded"),
    ],
)
def test_provider_aliases(alias: str, provider: str) -> None:
    assert normalize_provider(alias) == provider
    assert detect(provider=alias, probe=False).provider == provider


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"provider": "ibm"}, r"provider='ibm'.*'gcp', 'aws' or 'azure'", id="provider"
        ),
        pytest.param(
            {"default_provider": "oracle"}, r"default_provider='oracle'", id="default-provider"
        ),
        pytest.param(
            {"provider": "aws", "region": "europe-west1"},
            r"region='europe-west1' is not a region of aws: it is gcp's; give provider gcp",
            id="region-of-another-provider",
        ),
        pytest.param(
            {"region": "moon-base-alpha"},
            r"region='moon-base-alpha' is not a region of gcp, aws or azure",
            id="region",
        ),
        pytest.param({"country_iso": "XX"}, r"country_iso='XX'.*alpha-2 or alpha-3", id="country"),
        pytest.param(
            {"default_country": "Belgium"}, r"default_country='Belgium'", id="default-country"
        ),
        pytest.param({"deadline_s": 0}, r"deadline_s", id="deadline-zero"),
        pytest.param({"deadline_s": float("nan")}, r"deadline_s", id="deadline-nan"),
    ],
)
def test_bad_arguments_name_themselves(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        detect(probe=False, **kwargs)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("CARBONPIPE_CLOUD_PROVIDER", "oracle", id="provider"),
        pytest.param("CARBONPIPE_CLOUD_REGION", "moon-base-alpha", id="region"),
        pytest.param("CARBONPIPE_COUNTRY", "ZZZ", id="country"),
    ],
)
def test_bad_env_values_are_config_errors_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError, match=variable):
        detect(probe=False)


@pytest.mark.parametrize(
    ("code", "alpha3"),
    [
        pytest.param("be", "BEL", id="alpha2-lower"),
        pytest.param("BEL", "BEL", id="alpha3"),
        pytest.param("GB", "GBR", id="gb"),
        pytest.param(" us ", "USA", id="padded"),
    ],
)
def test_country_codes_normalise_to_alpha3(code: str, alpha3: str) -> None:
    assert normalize_country(code) == alpha3
    location = detect(country_iso=code)
    assert (location.country_iso, location.detected_by, location.provider) == (
        alpha3,
        "argument",
        None,
    )


def test_country_table_matches_pycountry() -> None:
    pycountry = pytest.importorskip("pycountry")

    expected = {c.alpha_2: c.alpha_3 for c in pycountry.countries}
    assert {code: normalize_country(code) for code in expected} == expected


def _fake_intensity(monkeypatch: pytest.MonkeyPatch, mapping: dict[tuple[str, str], str]) -> None:
    module = types.ModuleType("carbonpipe.intensity.table")
    module.country_for_region = lambda provider, region: mapping.get((provider, region))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "carbonpipe.intensity.table", module)


def test_country_comes_from_the_region_via_the_intensity_tables(
    cloud_metadata: CloudMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_intensity(monkeypatch, {("gcp", "europe-west1"): "BEL"})
    cloud_metadata.write_dmi(DMI_GCP)

    location = detect(default_country="FRA")

    assert (location.region, location.country_iso, location.detected_by) == (
        "europe-west1",
        "BEL",
        "metadata",
    )


def test_explicit_country_beats_the_region_s_country() -> None:
    # A given region is checked against the real table (europe-west1 is Belgium's there).
    location = detect(region="europe-west1", country_iso="NL")

    assert location.country_iso == "NLD"


def test_a_given_region_takes_its_country_from_the_table() -> None:
    location = detect(region="europe-west1", default_country="FR")

    assert (location.region, location.country_iso) == ("europe-west1", "BEL")


def test_default_country_used_when_nothing_else_is_known() -> None:
    location = detect(default_country="de", probe=False)

    assert (location.country_iso, location.detected_by) == ("DEU", "default")


# -- the value object and the module ------------------------------------------------------------


def test_location_to_dict_is_json_ready() -> None:
    location = detect(provider="gcp", region="europe-west1", country_iso="BE")

    data = location.to_dict()

    assert json.loads(json.dumps(data)) == data
    assert data["provider"] == "gcp"
    assert data["detected_by"] == "argument"
    assert data["notes"] == []


def test_location_rejects_an_unknown_source() -> None:
    with pytest.raises(ValueError, match="detected_by"):
        Location(None, None, None, detected_by="guess", elapsed_ms=0.0)


def test_importing_cloud_loads_no_http_stack() -> None:
    code = (
        "import sys, carbonpipe.location.detect; "
        "heavy = {'http.client', 'urllib.request', 'asyncio', 'ssl', 'requests', 'codecarbon'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_default_deadline_is_60_ms() -> None:
    import inspect

    assert inspect.signature(detect_location).parameters["deadline_s"].default == 0.06


def test_offline_tracking_mode_never_probes_a_metadata_server(
    cloud_metadata: CloudMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    from carbonpipe.config import resolve_settings

    monkeypatch.setenv("CARBONPIPE_TRACKING_MODE", "offline")
    loc = resolve_settings().locate()
    assert cloud_metadata.counts() == {"gcp": 0, "aws": 0, "azure": 0}
    assert loc.detected_by == "world" and loc.provider is None
    monkeypatch.setenv("CARBONPIPE_TRACKING_MODE", "machine")
    cloud.clear_cache()
    assert resolve_settings().locate().detected_by == "metadata"
    assert sum(cloud_metadata.counts().values()) > 0
