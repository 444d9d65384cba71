"""`make profile`: run the benchmark while py-spy samples every service of the running mesh.

Writes one flame graph per service (var/profiles/<service>.svg) and a text summary of the
functions that held the CPU longest (var/profiles/summary.txt). Start the mesh first
(`make run`); py-spy attaches to the running processes by their listening ports.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil

from tools.mesh import ROOT, SERVICES, MeshPorts

PYSPY = Path(sys.executable).parent / "py-spy"
_TITLE = re.compile(
    r"<title>(?P<frame>.*?) \((?P<samples>[\d,]+) samples?, (?P<pct>[\d.]+)%\)</title>"
)


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


def top_frames(svg: Path, limit: int) -> list[tuple[float, str]]:
    """The frames with the largest inclusive share of samples in a py-spy flame graph."""
    shares: dict[str, float] = {}
    for match in _TITLE.finditer(svg.read_text()):
        frame = html.unescape(match["frame"])
        # A frame appears once per distinct call path; keep its largest share.
        shares[frame] = max(shares.get(frame, 0.0), float(match["pct"]))
    ranked = sorted(((pct, frame) for frame, pct in shares.items()), reverse=True)
    return [(pct, frame) for pct, frame in ranked if frame != "all"][:limit]


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
    recorders = {
        service: subprocess.Popen(  # noqa: S603 - fixed command and our own pids
            [
                str(PYSPY),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(duration),
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                "flamegraph",
                "--output",
                str(args.out / f"{service}.svg"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for service, pid in pids.items()
    }
    subprocess.run(  # noqa: S603 - runs our own benchmark module
        [sys.executable, "-m", "bench", "--seconds", str(args.seconds)], cwd=ROOT, check=True
    )
    lines: list[str] = []
    for service, recorder in recorders.items():
        _, err = recorder.communicate()
        svg = args.out / f"{service}.svg"
        if recorder.returncode != 0 or not svg.exists():
            lines.append(f"== {service}: py-spy failed: {err.decode(errors='replace').strip()}")
            continue
        lines.append(f"== {service} (inclusive share of samples; {svg.relative_to(ROOT)})")
        lines += [f"{pct:6.2f}%  {frame}" for pct, frame in top_frames(svg, args.top)]
        lines.append("")
    summary = args.out / "summary.txt"
    summary.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"flame graphs and summary in {args.out}")


if __name__ == "__main__":
    main()
