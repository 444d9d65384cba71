"""The edge's media cache in the rendered Envoy config: bounded, on for media downloads only, and
its misses sent to the media listener that transcodes them. Its behaviour through a running edge
is tests/e2e/test_media_cache.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.edge_support import loopback_config
from tests.unit.test_edge_account_pages import connection_manager
from tools import edge

CACHE = "meshgram.media_cache"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The rendered config of an edge whose media cache is in a folder of its own."""
    if any(not path.is_file() for path in edge.SERVED_FILES.values()):
        pytest.fail("run `make docs-ui` first")
    folder = tmp_path_factory.mktemp("edge") / "media-cache"
    rendered = edge.render(
        loopback_config(media_cache_dir=folder, media_cache_bytes=1234567, media_cache_entries=89)
    )
    parsed: dict[str, Any] = yaml.safe_load(rendered)
    parsed["test_folder"] = str(folder)
    return parsed


def routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The edge listener's routes, in order."""
    (host,) = connection_manager(config)["route_config"]["virtual_hosts"]
    return list(host["routes"])


def test_the_cache_is_bounded_and_kept_where_configured(config: dict[str, Any]) -> None:
    filters = connection_manager(config)["http_filters"]
    names = [f["name"] for f in filters]
    # Last before the router: a hit skips every filter after it.
    assert names[-2:] == [CACHE, "envoy.filters.http.router"]
    store = filters[-2]["typed_config"]["typed_config"]
    assert store["cache_path"] == config["test_folder"]
    assert (store["max_cache_size_bytes"], store["max_cache_entry_count"]) == (1234567, 89)


def test_media_downloads_go_to_the_media_listener_untranscoded(config: dict[str, Any]) -> None:
    ranged, media = [r for r in routes(config) if r["match"].get("prefix") == "/media/"]
    for route in (ranged, media):
        assert route["route"]["cluster"] == "media_origin"
        filters = route["typed_per_filter_config"]
        assert filters["envoy.filters.http.grpc_json_transcoder"]["disabled"] is True
    # A Range request skips the cache (storage_svc answers it exactly); the rest may use it.
    assert ranged["match"]["headers"] == [{"name": "range", "present_match": True}]
    assert ranged["typed_per_filter_config"][CACHE]["disabled"] is True
    assert CACHE not in media["typed_per_filter_config"]
    [listener] = [
        li for li in config["static_resources"]["listeners"] if li["name"] == "media_origin"
    ]
    (chain,) = listener["filter_chains"]
    manager = chain["filters"][0]["typed_config"]
    assert [f["name"] for f in manager["http_filters"]] == [
        "meshgram.answers",
        "envoy.filters.http.grpc_json_transcoder",
        "meshgram.upstream",
        "envoy.filters.http.router",
    ]
    (inner,) = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert inner["route"]["cluster"] == "storage_svc"
    # Downloads are safe to repeat: a failed replica is retried here as on the edge's route.
    assert "retry_policy" in inner["route"]
    assert (
        "x-meshgram-client-ip"
        in manager["route_config"]["virtual_hosts"][0]["request_headers_to_remove"]
    )


def test_files_the_edge_serves_itself_skip_the_cache(config: dict[str, Any]) -> None:
    served = [
        r
        for r in routes(config)
        if "direct_response" in r and r["direct_response"]["status"] == 200
    ]
    assert served
    for route in served:
        assert route["typed_per_filter_config"][CACHE]["disabled"] is True, route["match"]


def test_writing_the_config_makes_the_cache_folder(tmp_path: Path) -> None:
    folder = tmp_path / "deep" / "cache"
    edge.write(loopback_config(media_cache_dir=folder), tmp_path / "envoy.yaml")
    assert folder.is_dir()
