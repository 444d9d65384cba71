"""`make profile`: run the benchmark while py-spy samples every service of the running mesh.

Writes per service a flame graph (var/profiles/<service>.svg) and collapsed stacks
(<service>.txt), and a summary of the functions that held the CPU longest (summary.txt).
Start the mesh first (`make run`); py-spy attaches to the services by their listening ports.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import psutil

from tools.mesh import ROOT, SERVICES, MeshPorts

PYSPY = Path(sys.executable).parent / "py-spy"


def service_pids(ports: MeshPorts) -> dict[str, int]:
    """Map each service to the pid listening on its port."""
    wanted = {ports.of(service): service for service in SERVICES}
    found: dict[str, int] = {}
    for conn in psutil.net_connections(kind="tcp"):
        address = conn.laddr
        if conn.status != psutil.CONN_LISTEN or conn.pid is None or not address:
            continue
        if address.port in wanted:
            found[wanted[address.port]] = conn.pid
    missing = [service for service in SERVICES if service not in found]
    if missing:
        raise SystemExit(f"not running: {', '.join(missing)} (start the mesh with `make run`)")
    return found


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
        if any(f"({pkg}/" in frame for pkg in (*SERVICES, "meshkit"))
    ]
    lines += [f"  {100 * n / total:6.2f}%  {frame}" for frame, n in ours[:limit]]
    return lines


def _record(pid: int, seconds: int, fmt: str, output: Path) -> subprocess.Popen[bytes]:
    """Start py-spy sampling pid for seconds into output; its messages go to output.log."""
    log = output.with_suffix(output.suffix + ".log").open("wb")
    command = [str(PYSPY), "record", "--pid", str(pid), "--duration", str(seconds)]
    command += ["--rate", "100", "--nonblocking", "--format", fmt, "--output", str(output)]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603


def main(argv: Sequence[str] | None = None) -> None:
    """Profile every service under benchmark load and write the flame graphs and summary."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each bench run")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "profiles")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pids = service_pids(MeshPorts.from_env(os.environ))
    # The bench runs three scenarios after a warm-up each; sample through all of them.
    duration = int(3 * (args.seconds + 4) + 5)
    # Two samplers per process: py-spy writes one format per run, and the summary needs the
    # collapsed stacks that the SVG does not keep.
    recorders = [
        _record(pid, duration, fmt, args.out / f"{service}.{suffix}")
        for service, pid in pids.items()
        for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt"))
    ]
    subprocess.run(  # noqa: S603 - runs our own benchmark module
        [sys.executable, "-m", "bench", "--seconds", str(args.seconds)], cwd=ROOT, check=True
    )
    for recorder in recorders:
        recorder.wait()
    lines: list[str] = []
    for service in pids:
        raw = args.out / f"{service}.txt"
        lines.append(f"== {service} (flame graph: {(args.out / f'{service}.svg')})")
        lines += hot_functions(raw, args.top) if raw.exists() else ["  (no samples)"]
        lines.append("")
    summary = args.out / "summary.txt"
    summary.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"flame graphs and summary in {args.out}")


if __name__ == "__main__":
    main()
