"""storage_svc's own Prometheus figures: image processing, the access cache, the blob collector."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from storage_svc.collector import CollectorFigures
from storage_svc.images import ImageFigures


class StorageCollector(Collector):
    """Reads the service's counters when Prometheus scrapes."""

    def __init__(self, images: ImageFigures, collector: CollectorFigures) -> None:
        self._images = images
        self._collector = collector

    def collect(self) -> Iterator[Metric]:
        """Yield the current figures."""
        images, blobs = self._images, self._collector
        processed = CounterMetricFamily(
            "meshgram_images_processed",
            "Uploads processed, by outcome: stored (renditions made) or refused (not an image "
            "we accept: damaged, too large, another type).",
            labels=["outcome"],
        )
        processed.add_metric(["stored"], images.processed)
        processed.add_metric(["refused"], images.refused)
        yield processed
        yield CounterMetricFamily(
            "meshgram_image_processing_seconds",
            "Time spent processing uploads (decoding, re-encoding, hashing).",
            value=images.processing_seconds,
        )
        lookups = CounterMetricFamily(
            "meshgram_image_access_lookups",
            "Who-may-see lookups of deliveries and descriptions, by outcome: hit (remembered) or "
            "miss (read from data_access).",
            labels=["outcome"],
        )
        lookups.add_metric(["hit"], images.access_hits)
        lookups.add_metric(["miss"], images.access_misses)
        yield lookups
        for name, value, text in (
            ("collected", blobs.collected, "Blobs deleted: no image named them any more."),
            ("kept", blobs.kept, "Queued blobs kept: an image named them again."),
            ("orphans_queued", blobs.orphans_queued, "Blobs no record ever named, queued."),
        ):
            yield CounterMetricFamily(f"meshgram_blob_collector_{name}", text, value=value)
