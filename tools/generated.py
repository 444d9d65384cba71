"""Documents generated from protos/ and committed beside them (docs/api.md, docs/openapi.json):
write one, or tell how the committed copy differs from what would be generated."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stale_diff(path: Path, wanted: str) -> str:
    """Return a unified diff from the file at path to wanted; empty when they are equal."""
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current == wanted:
        return ""
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    return "".join(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            fromfile=f"{name} (on disk)",
            tofile=f"{name} (generated)",
        )
    )


def main(
    argv: Sequence[str] | None,
    *,
    path: Path,
    generate: Callable[[], str],
    command: str,
    description: str,
) -> int:
    """Rewrite path with generate(), or with --check exit 1 and print a diff when it is stale."""
    parser = argparse.ArgumentParser(description=description)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"change nothing; exit 1 and print a diff when {shown} is out of date",
    )
    args = parser.parse_args(argv)
    if args.check:
        diff = stale_diff(path, generate())
        if diff:
            sys.stderr.write(diff)
            print(f"{shown} is out of date; regenerate it with `{command}`", file=sys.stderr)
            return 1
        print(f"{shown} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generate(), encoding="utf-8")
    print(f"wrote {shown}")
    return 0
