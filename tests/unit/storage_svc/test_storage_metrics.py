"""storage_svc's Prometheus figures: what uploads, deliveries and the collector did."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from meshkit.errors import InvalidArgument
from storage_svc.collector import CollectorFigures
from storage_svc.images import DownloadRequest
from storage_svc.metrics import StorageCollector
from tests.sample_images import png, truncated_jpeg
from tests.unit.storage_svc.storage_fakes import chunks_of, image_service, read_all


def scrape(collector: StorageCollector) -> dict[str, float]:
    """The samples a scrape shows, by name and labels."""
    registry = CollectorRegistry()
    registry.register(collector)
    samples: dict[str, float] = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_a_scrape_counts_uploads_lookups_and_collections(tmp_path: Path) -> None:
    service = image_service(tmp_path, access_cache_seconds=60)
    image_id = (await service.upload("owner", chunks_of(png()))).image.id
    with pytest.raises(InvalidArgument):
        await service.upload("owner", chunks_of(truncated_jpeg()))
    for _ in range(3):
        await read_all(
            (await service.download(DownloadRequest(image_id=image_id, variant="w320"), "")).chunks
        )
    blobs = CollectorFigures(collected=4, kept=1, orphans_queued=3)

    samples = scrape(StorageCollector(service.figures, blobs))

    assert samples['meshgram_images_processed_total{outcome="stored"}'] == 1
    assert samples['meshgram_images_processed_total{outcome="refused"}'] == 1
    assert samples["meshgram_image_processing_seconds_total"] > 0
    assert samples['meshgram_image_access_lookups_total{outcome="miss"}'] == 1
    assert samples['meshgram_image_access_lookups_total{outcome="hit"}'] == 2
    assert samples["meshgram_blob_collector_collected_total"] == 4
    assert samples["meshgram_blob_collector_orphans_queued_total"] == 3
