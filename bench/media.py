"""The media scenarios: uploads of phone-sized photos (throughput, and storage_svc's peak memory
while eight arrive at once) and delivery of renditions through the edge (public, signed and
revalidated).

Uploads go over REST (POST /v1/images, the raw file as the body, a bearer token), one
httpx client per uploader in its own thread: each upload is a different picture, so neither the
processing nor the blob writes are skipped for bytes already stored. Sending ten megabytes costs
the client little CPU beside the seconds of decoding and re-encoding it causes in storage_svc,
so a Python client does not distort these figures the way it would for small reads. Downloads
are fixed requests, loaded with h2load like the other REST scenarios.
"""

from __future__ import annotations

import math
import random
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench import h2load
from tests import sample_images

UPLOAD_MEGABYTES = 9.5
"""Size of each uploaded photo (10**6 bytes); below STORAGE_MAX_IMAGE_BYTES (10 MiB)."""
UPLOAD_CLIENTS = (1, 2, 4)
MEMORY_CLIENTS = 8
MEMORY_ROUNDS = 3
TARGET_PEAK_RSS_MB = 200.0
"""storage_svc's peak resident memory while MEMORY_CLIENTS uploads arrive at once."""
DOWNLOAD_IMAGES = 4
"""Images per account the download scenarios cycle through."""
DOWNLOAD_SOURCE_MEGABYTES = 2.0
DOWNLOAD_VARIANT = "w640"
CHUNK_BYTES = 1024 * 1024
MEGABYTE = 1_000_000
# Often enough to see a decode's buffers, which live for a good part of a second.
RSS_SAMPLE_SECONDS = 0.02
Load = Callable[[float], h2load.Run]


@dataclass(frozen=True)
class Upload:
    """One upload as its client saw it; times from time.perf_counter()."""

    size: int
    status: int
    started: float
    sent: float
    """When the client had handed the last byte to its connection."""
    answered: float
    image_id: str

    @property
    def total_ms(self) -> float:
        """From the first byte sent to the answer."""
        return 1000 * (self.answered - self.started)

    @property
    def transfer_ms(self) -> float:
        """Sending the file."""
        return 1000 * (self.sent - self.started)

    @property
    def answer_ms(self) -> float:
        """From the last byte sent to the answer: waiting for a turn, processing, storing."""
        return 1000 * (self.answered - self.sent)


@dataclass
class UploadRun:
    """Uploads by `clients` uploaders at once, each one after the other."""

    clients: int
    uploads: list[Upload]
    seconds: float
    """Wall time from the first upload's start to the last one's answer."""
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def succeeded(self) -> list[Upload]:
        """The uploads answered 200."""
        return [u for u in self.uploads if u.status == 200]

    @property
    def failures(self) -> int:
        """Uploads answered with anything but 200."""
        return len(self.uploads) - len(self.succeeded)

    @property
    def megabytes_per_second(self) -> float:
        """Uploaded bytes stored per second of wall time, in MB (10**6 bytes)."""
        return sum(u.size for u in self.succeeded) / MEGABYTE / self.seconds

    @property
    def images_per_second(self) -> float:
        """Uploads stored per second of wall time."""
        return len(self.succeeded) / self.seconds

    def percentile(self, q: float, of: Callable[[Upload], float]) -> float:
        """Nearest-rank percentile q (0..100) of a time of the successful uploads, in ms."""
        ordered = sorted(of(u) for u in self.succeeded)
        if not ordered:
            return math.nan
        rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]

    def median(self, of: Callable[[Upload], float]) -> float:
        """Median of a time of the successful uploads, in ms."""
        values = [of(u) for u in self.succeeded]
        return statistics.median(values) if values else math.nan

    def cpu_ms_per_upload(self, role: str) -> float:
        """CPU milliseconds the role spent per stored upload."""
        done = len(self.succeeded)
        return 1000 * self.cpu_seconds.get(role, 0.0) / done if done else math.nan


@dataclass(frozen=True)
class MemoryRun:
    """storage_svc's resident memory around rounds of simultaneous uploads, in kB (KiB, as
    /proc reports it)."""

    clients: int
    rounds: int
    uploads: list[Upload]
    baseline_kib: int
    """VmRSS after a warm-up upload, before the rounds."""
    peak_kib: int
    """VmHWM over the rounds (reset before them) or, when it could not be reset, since the
    process started."""
    sampled_peak_kib: int
    """The largest VmRSS sampled every RSS_SAMPLE_SECONDS during the rounds."""
    after_kib: int
    """VmRSS once the rounds were over."""
    peak_reset: bool

    @property
    def failures(self) -> int:
        """Uploads answered with anything but 200."""
        return sum(1 for u in self.uploads if u.status != 200)

    @property
    def met(self) -> bool:
        """Whether the peak stayed under the target with every upload stored."""
        return megabytes(self.peak_kib) < TARGET_PEAK_RSS_MB and self.failures == 0


@dataclass(frozen=True)
class DownloadUrls:
    """What the download scenarios load: the w640 paths of public images, signed paths of a
    private account's images, and one public path with the ETag of its WebP file."""

    public: list[str]
    signed: list[str]
    revalidated: str
    entity_tag: str
    sizes: dict[str, int]
    """Bytes of the WebP file, by path."""
    owned: dict[str, list[str]]
    """The images' ids by their owner's token, to delete them afterwards."""


def megabytes(kib: int) -> float:
    """KiB (as /proc counts) in MB (10**6 bytes)."""
    return kib * 1024 / MEGABYTE


def photos(count: int, seed: int) -> list[bytes]:
    """count different phone-sized photos (UPLOAD_MEGABYTES each), from seed on."""
    return [sample_images.noise_jpeg(UPLOAD_MEGABYTES, seed=seed + i) for i in range(count)]


def run_seed() -> int:
    """A seed for this run's photos: the blob store keeps renditions across runs, and a
    picture seen before would skip its writes."""
    return random.SystemRandom().randrange(1 << 40)


def upload(client: httpx.Client, token: str, data: bytes) -> Upload:
    """POST one file to /v1/images in CHUNK_BYTES pieces, noting when the last left."""
    sent: list[float] = []

    def body() -> Iterator[bytes]:
        """The file in pieces; the code after the last yield runs once that piece is written."""
        view = memoryview(data)
        for start in range(0, len(data), CHUNK_BYTES):
            yield bytes(view[start : start + CHUNK_BYTES])
        sent.append(time.perf_counter())

    started = time.perf_counter()
    reply = client.post(
        "/v1/images",
        content=body(),
        headers={
            "authorization": f"Bearer {token}",
            "content-type": "image/jpeg",
            "content-length": str(len(data)),
        },
    )
    answered = time.perf_counter()
    image_id = str(reply.json()["image"]["id"]) if reply.status_code == 200 else ""
    return Upload(
        len(data), reply.status_code, started, sent[0] if sent else answered, answered, image_id
    )


def upload_all(
    base: str, tokens: Sequence[str], files: Sequence[Sequence[bytes]]
) -> list[list[Upload]]:
    """Each token's client uploads its files one after the other, all clients at once (they
    start together); the uploads of each client, in the order of tokens."""
    start = threading.Barrier(len(tokens))

    def one(token: str, mine: Sequence[bytes]) -> list[Upload]:
        """One client's uploads over its own connection."""
        with httpx.Client(base_url=base, timeout=180) as client:
            start.wait()
            return [upload(client, token, data) for data in mine]

    with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
        return list(pool.map(one, tokens, files))


def stored_ids(
    tokens: Sequence[str], by_client: Sequence[Sequence[Upload]]
) -> dict[str, list[str]]:
    """The ids of the stored images by uploader's token, from upload_all's answer."""
    return {
        token: [u.image_id for u in uploads if u.image_id]
        for token, uploads in zip(tokens, by_client, strict=True)
    }


def delete_images(base: str, owners: Mapping[str, Sequence[str]]) -> None:
    """Delete uploaded images (token -> ids), so that the collector frees their bytes."""
    with httpx.Client(base_url=base, timeout=60) as client:
        for token, ids in owners.items():
            for image_id in ids:
                client.delete(
                    f"/v1/images/{image_id}", headers={"authorization": f"Bearer {token}"}
                ).raise_for_status()


def measure_uploads(
    base: str,
    tokens: Sequence[str],
    count: int,
    measured: Callable[[dict[str, float]], AbstractContextManager[None]],
) -> UploadRun:
    """count photos uploaded by len(tokens) clients at once (count / clients each, rounded
    up), with the CPU each role of the mesh spent; `measured` fills a dict with that CPU over
    a block. The photos are made before the clock starts and deleted after it stops."""
    clients = len(tokens)
    each = math.ceil(count / clients)
    seed = run_seed()
    files = [photos(each, seed + i * each) for i in range(clients)]
    cpu: dict[str, float] = {}
    own = resource.getrusage(resource.RUSAGE_SELF)
    with measured(cpu):
        by_client = upload_all(base, tokens, files)
    mine = resource.getrusage(resource.RUSAGE_SELF)
    # The client runs in this process, not as a child: its CPU is ours.
    cpu["load generator"] = mine.ru_utime + mine.ru_stime - own.ru_utime - own.ru_stime
    uploads = [u for mine in by_client for u in mine]
    started = min(u.started for u in uploads)
    seconds = max(u.answered for u in uploads) - started
    delete_images(base, stored_ids(tokens, by_client))
    return UploadRun(clients, uploads, seconds, cpu)


def measure_peak_memory(base: str, tokens: Sequence[str], pid: int, rounds: int) -> MemoryRun:
    """storage_svc's (pid) resident memory before, during and after `rounds` rounds of one
    upload per token, all at once."""
    seed = run_seed()
    with httpx.Client(base_url=base, timeout=180) as client:
        # Codecs and buffers a first upload brings in are part of the baseline, not the peak.
        warm = upload(client, tokens[0], photos(1, seed)[0])
    baseline = proc_status_kib(pid, "VmRSS")
    reset = reset_peak(pid)
    uploads: list[Upload] = []
    owners: dict[str, list[str]] = {tokens[0]: [warm.image_id] if warm.image_id else []}
    with RssSampler(pid) as sampler:
        for round_number in range(rounds):
            files = [
                photos(1, seed + 1 + round_number * len(tokens) + i) for i in range(len(tokens))
            ]
            by_client = upload_all(base, tokens, files)
            uploads += [u for mine in by_client for u in mine]
            for token, ids in stored_ids(tokens, by_client).items():
                owners.setdefault(token, []).extend(ids)
    peak = proc_status_kib(pid, "VmHWM")
    after = proc_status_kib(pid, "VmRSS")
    delete_images(base, owners)
    return MemoryRun(
        clients=len(tokens),
        rounds=rounds,
        uploads=uploads,
        baseline_kib=baseline,
        peak_kib=peak,
        sampled_peak_kib=sampler.peak_kib,
        after_kib=after,
        peak_reset=reset,
    )


def proc_status_kib(pid: int, name: str) -> int:
    """A kB figure of /proc/<pid>/status, e.g. VmRSS or VmHWM."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return int(value.split()[0])
    raise LookupError(f"/proc/{pid}/status has no {name}")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current VmRSS (Linux: "5" to clear_refs); False when
    the kernel refuses, and VmHWM then counts from the process's start."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples a process's VmRSS in a thread while in use; keeps the largest."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RssSampler:
        """Start sampling."""
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        """Stop sampling, with one last sample."""
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        """Read VmRSS until told to stop."""
        while True:
            try:
                self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid, "VmRSS"))
            except (OSError, LookupError):
                return
            if self._stop.wait(RSS_SAMPLE_SECONDS):
                return


def storage_pid(roles: Mapping[str, Sequence[psutil.Process]]) -> int:
    """The pid of the one storage_svc process among the mesh's processes."""
    found = roles.get("storage_svc", [])
    if len(found) != 1:
        raise SystemExit(f"the memory scenario needs one storage_svc process, found {len(found)}")
    return found[0].pid


def make_private(base: str, token: str) -> None:
    """Make the token's account private: its images are then served by signed URL only."""
    with httpx.Client(base_url=base, timeout=30) as client:
        client.patch(
            "/v1/profiles/me",
            params={"updateMask": "private"},
            json={"private": True},
            headers={"authorization": f"Bearer {token}"},
        ).raise_for_status()


def variant_url(base: str, token: str, image_id: str, variant: str) -> str:
    """The URL path GetImage gives the owner for one variant (signed when not public)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        reply = client.get(f"/v1/images/{image_id}", headers={"authorization": f"Bearer {token}"})
        reply.raise_for_status()
    for found in reply.json()["image"]["variants"]:
        if found["name"] == variant:
            return str(found["url"])
    raise LookupError(f"image {image_id} has no variant {variant}")


def prepare_downloads(base: str, public_token: str, private_token: str) -> DownloadUrls:
    """Upload DOWNLOAD_IMAGES photos to each account, make the second private, and check
    that every path answers a WebP file signed out."""
    seed = run_seed()
    paths: dict[str, list[str]] = {}
    owned: dict[str, list[str]] = {}
    with httpx.Client(base_url=base, timeout=180) as client:
        for offset, token in enumerate((public_token, private_token)):
            ids = []
            for i in range(DOWNLOAD_IMAGES):
                data = sample_images.noise_jpeg(
                    DOWNLOAD_SOURCE_MEGABYTES, seed=seed + offset * DOWNLOAD_IMAGES + i
                )
                done = upload(client, token, data)
                if done.status != 200:
                    raise SystemExit(f"upload for the download scenarios failed: {done.status}")
                ids.append(done.image_id)
            owned[token] = ids
            if token == private_token:
                make_private(base, token)
            paths[token] = [variant_url(base, token, i, DOWNLOAD_VARIANT) for i in ids]
        sizes: dict[str, int] = {}
        tags: dict[str, str] = {}
        for path in [*paths[public_token], *paths[private_token]]:
            reply = client.get(path, headers={"accept": "image/webp"})
            reply.raise_for_status()
            if reply.headers.get("content-type") != "image/webp":
                raise SystemExit(f"{path} answered {reply.headers.get('content-type')}")
            sizes[path] = len(reply.content)
            tags[path] = reply.headers["etag"]
    public = paths[public_token]
    if any("signature=" in p for p in public) or not all(
        "signature=" in p for p in paths[private_token]
    ):
        raise SystemExit("expected plain URLs for the public account, signed ones for the private")
    return DownloadUrls(
        public=public,
        signed=paths[private_token],
        revalidated=public[0],
        entity_tag=tags[public[0]],
        sizes=sizes,
        owned=owned,
    )


def cache_share(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    """How the edge's media cache answered between two readings of its events: the share
    served from it (fresh hits), revalidated with storage_svc, and missed."""
    seen = {event: after.get(event, 0) - before.get(event, 0) for event in after}
    looked_up = seen.get("hit", 0) + seen.get("validate", 0) + seen.get("miss", 0)
    if not looked_up:
        return "edge cache not used"
    return (
        f"edge cache: {seen.get('hit', 0) / looked_up:.1%} hits, "
        f"{seen.get('validate', 0) / looked_up:.1%} revalidated, "
        f"{seen.get('miss', 0) / looked_up:.1%} misses"
    )


def downloads(base: str, paths: Sequence[str], headers: Mapping[str, str], clients: int) -> Load:
    """GET each of paths in turn (cycled) with headers, no token, HTTP/1.1 like the other REST
    loads, `clients` connections with one request in flight each."""
    urls = [f"{base}{path}" for path in paths]
    return lambda seconds: h2load.run(
        urls, connections=clients, seconds=seconds, warmup=0, headers=dict(headers), http1=True
    )


def upload_table(runs: Sequence[UploadRun]) -> str:
    """The upload runs as a Markdown table."""
    roles = ("envoy", "storage_svc", "data_access", "load generator")
    cpu_header = " | ".join(f"{role} CPU ms/upload" for role in roles)
    lines = [
        "| uploads of a ~9.5 MB JPEG | clients | uploads | failed | MB/s | images/s "
        "| p50 ms | p99 ms | transfer p50 ms | after last byte p50 ms "
        f"| {cpu_header} |",
        "| --- |" + " ---: |" * (9 + len(roles)),
    ]
    for run in runs:
        cpu = " | ".join(f"{run.cpu_ms_per_upload(role):,.0f}" for role in roles)
        lines.append(
            f"| REST POST /v1/images | {run.clients} | {len(run.uploads)} | {run.failures} "
            f"| {run.megabytes_per_second:.1f} | {run.images_per_second:.2f} "
            f"| {run.median(_total):,.0f} | {run.percentile(99, _total):,.0f} "
            f"| {run.median(_transfer):,.0f} | {run.median(_answer):,.0f} | {cpu} |"
        )
    return "\n".join(lines)


def memory_lines(run: MemoryRun) -> list[str]:
    """The memory run's figures and verdict."""
    since = "over the rounds" if run.peak_reset else "since storage_svc started"
    verdict = "met" if run.met else "MISSED"
    totals = [u.total_ms for u in run.uploads if u.status == 200]
    timing = (
        f", each upload p50 {statistics.median(totals):,.0f} ms, max {max(totals):,.0f} ms"
        if totals
        else ""
    )
    return [
        f"storage_svc peak memory, {run.clients} uploads at once x {run.rounds} rounds: "
        f"peak RSS < {TARGET_PEAK_RSS_MB:.0f} MB: VmHWM {megabytes(run.peak_kib):.1f} MB "
        f"({since}): {verdict}",
        f"  baseline VmRSS {megabytes(run.baseline_kib):.1f} MB (after one warm-up upload), "
        f"increase {megabytes(run.peak_kib - run.baseline_kib):.1f} MB; largest VmRSS sampled "
        f"every {RSS_SAMPLE_SECONDS * 1000:.0f} ms {megabytes(run.sampled_peak_kib):.1f} MB; "
        f"VmRSS afterwards {megabytes(run.after_kib):.1f} MB; {len(run.uploads)} uploads, "
        f"{run.failures} failed{timing}",
    ]


def _total(u: Upload) -> float:
    """An upload's time to its answer."""
    return u.total_ms


def _transfer(u: Upload) -> float:
    """An upload's sending time."""
    return u.transfer_ms


def _answer(u: Upload) -> float:
    """An upload's time from its last byte to its answer."""
    return u.answer_ms
