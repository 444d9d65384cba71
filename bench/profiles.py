"""`make profile`: where the CPU goes, as flame graphs of every Python process per scenario.

`python -m bench --profile` samples each Python process of the benchmark's mesh with py-spy
during every measured scenario and writes, per scenario, a flame graph (<process>.svg) and
collapsed stacks (<process>.txt) plus summary.txt, the functions that held the CPU longest.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

PYSPY = Path(sys.executable).parent / "py-spy"
OWN_PACKAGES = ("auth_svc", "user_svc", "storage_svc", "data_access", "meshkit")


def hot_functions(raw: Path, limit: int) -> list[str]:
    """Summarise py-spy's collapsed stacks: the functions with most self and inclusive time."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        frames = stack.split(";")
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return ["  (no samples: the process was idle)"]
    lines = [f"  {total} samples; self time (where the CPU was):"]
    lines += [f"  {100 * n / total:6.2f}%  {frame}" for frame, n in own.most_common(limit)]
    lines.append("  inclusive time of our own code (meshkit and the services):")
    ours = [
        (frame, n)
        for frame, n in inclusive.most_common()
        if any(f"({pkg}/" in frame for pkg in OWN_PACKAGES)
    ]
    lines += [f"  {100 * n / total:6.2f}%  {frame}" for frame, n in ours[:limit]]
    return lines


def _record(pid: int, seconds: int, fmt: str, output: Path) -> subprocess.Popen[bytes]:
    """Start py-spy sampling pid for seconds into output; its messages go to output.log."""
    log = output.with_suffix(output.suffix + ".log").open("wb")
    command = [str(PYSPY), "record", "--pid", str(pid), "--duration", str(seconds)]
    command += ["--rate", "100", "--nonblocking", "--format", fmt, "--output", str(output)]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


@contextmanager
def profiled(
    pids: Mapping[str, int], seconds: float, folder: Path, top: int = 25
) -> Iterator[None]:
    """Sample each named process for `seconds` while the block runs (it should run as long);
    then write flame graphs, collapsed stacks and summary.txt into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    duration = int(seconds) + 1
    # Two samplers per process: py-spy writes one format per run, and the summary needs the
    # collapsed stacks that the SVG does not keep.
    recorders = [
        _record(pid, duration, fmt, folder / f"{name}.{suffix}")
        for name, pid in pids.items()
        for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt"))
    ]
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.wait()
    lines: list[str] = []
    for name in pids:
        raw = folder / f"{name}.txt"
        lines.append(f"== {name} (flame graph: {folder / f'{name}.svg'})")
        lines += hot_functions(raw, top) if raw.exists() else ["  (no samples)"]
        lines.append("")
    (folder / "summary.txt").write_text("\n".join(lines))


def slug(text: str) -> str:
    """A folder name for a scenario."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
