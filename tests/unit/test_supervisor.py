"""tools.supervisor: children that exit are restarted with growing delays, intentional stops are
final, and no child outlives the supervisor (not even one killed with SIGKILL)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tools.supervisor import Backoff, ChildSpec, Supervisor

ROOT = Path(__file__).resolve().parents[2]
# Short delays keep these tests fast; stable_after is out of reach unless a test lowers it.
FAST = Backoff(initial=0.05, factor=2.0, cap=0.2, stable_after=30.0)
SLEEPER = "import time; time.sleep(60)"
DELAY = re.compile(r"restarting it in ([\d.]+)s")


class Log:
    """Collects the supervisor's lines and lets a test wait for them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, line: str) -> None:
        with self._changed:
            self.lines.append(line)
            self._changed.notify_all()

    def wait_for(self, fragment: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        """Wait until count lines contain fragment; return them (AssertionError on timeout)."""

        def matching() -> list[str]:
            return [line for line in self.lines if fragment in line]

        with self._changed:
            if not self._changed.wait_for(lambda: len(matching()) >= count, timeout):
                raise AssertionError(f"{count} x {fragment!r} not logged; got {self.lines}")
            return matching()


@pytest.fixture
def log() -> Log:
    """The supervisor's log lines."""
    return Log()


@pytest.fixture
def supervisor(log: Log) -> Iterator[Supervisor]:
    """A supervisor with short delays, stopped after the test whatever happened."""
    running = Supervisor(FAST, log=log)
    try:
        yield running
    finally:
        running.stop_all()


def python(name: str, code: str, **options: Any) -> ChildSpec:
    """A child running a Python snippet."""
    return ChildSpec(
        name=name, command=[sys.executable, "-c", code], env=dict(os.environ), cwd=ROOT, **options
    )


def gone(pid: int) -> bool:
    """Tell whether pid no longer runs (a zombie nobody reaped counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll condition until it holds or timeout passes; return its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = [Backoff().delay(n) for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_child_that_exits_at_once_is_restarted_with_growing_delays(
    supervisor: Supervisor, log: Log
) -> None:
    supervisor.start(python("crasher", "raise SystemExit(3)"))
    exits = log.wait_for("exited with code 3", count=5)
    supervisor.stop("crasher")

    delays = [float(match[1]) for line in exits if (match := DELAY.search(line))]
    assert delays == [0.05, 0.1, 0.2, 0.2, 0.2]
    assert [f"(restart {n})" in line for n, line in enumerate(exits, 1)] == [True] * 5
    # From the second quick failure on, the line says where the child explained itself.
    assert "keeps failing" not in exits[0]
    assert all("see its last lines above for why" in line for line in exits[1:])
    assert log.wait_for("crasher restarted (pid", count=4)


def test_an_intentional_stop_is_never_restarted(supervisor: Supervisor, log: Log) -> None:
    process = supervisor.start(python("sleeper", SLEEPER))
    supervisor.stop("sleeper")

    assert process.returncode == -signal.SIGTERM
    time.sleep(4 * FAST.initial)
    assert log.lines == []
    assert supervisor.process("sleeper") is None
    assert supervisor.names() == []


def test_stop_all_ends_restarted_children(supervisor: Supervisor, log: Log) -> None:
    first = supervisor.start(python("sleeper", SLEEPER))
    os.kill(first.pid, signal.SIGKILL)
    log.wait_for("sleeper restarted")
    second = supervisor.process("sleeper")
    assert second is not None
    assert second.pid != first.pid
    assert f"sleeper (pid {first.pid}) was killed by SIGKILL" in log.lines[0]

    supervisor.stop_all()

    assert second.returncode == -signal.SIGTERM
    assert gone(second.pid)
    assert supervisor.names() == []


def test_a_child_that_stayed_up_starts_again_from_the_first_delay(log: Log) -> None:
    steady = Backoff(initial=0.05, factor=2.0, cap=0.2, stable_after=0.2)
    supervisor = Supervisor(steady, log=log)
    try:
        supervisor.start(python("steady", "import time; time.sleep(0.25); raise SystemExit(1)"))
        exits = log.wait_for("exited with code 1", count=3)
    finally:
        supervisor.stop_all()
    assert all("restarting it in 0.05s (restart 1)" in line for line in exits)


def test_a_child_ignoring_its_stop_signal_is_killed(supervisor: Supervisor, tmp_path: Path) -> None:
    output = tmp_path / "stubborn.log"
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring SIGTERM', flush=True); time.sleep(60)"
    )
    process = supervisor.start(python("stubborn", code, output=output, stop_timeout=0.3))
    assert eventually(lambda: output.exists() and "ignoring" in output.read_text())

    began = time.monotonic()
    supervisor.stop("stubborn")

    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - began >= 0.3


def test_a_child_that_cannot_start_at_all_is_an_error(supervisor: Supervisor) -> None:
    spec = ChildSpec(name="missing", command=["/nonexistent/program"], env={}, cwd=ROOT)
    with pytest.raises(FileNotFoundError):
        supervisor.start(spec)
    assert supervisor.names() == []


def test_a_name_is_supervised_once(supervisor: Supervisor) -> None:
    supervisor.start(python("sleeper", SLEEPER))
    with pytest.raises(ValueError, match="already supervised"):
        supervisor.start(python("sleeper", SLEEPER))


def test_before_start_runs_before_every_start(supervisor: Supervisor, log: Log) -> None:
    calls: list[int] = []
    supervisor.start(python("crasher", "raise SystemExit(1)", before_start=lambda: calls.append(1)))
    log.wait_for("crasher restarted", count=2)
    supervisor.stop("crasher")
    assert len(calls) >= 3


def test_output_goes_to_the_child_log_file(supervisor: Supervisor, tmp_path: Path) -> None:
    output = tmp_path / "logs" / "talker.log"
    output.parent.mkdir()
    supervisor.start(python("talker", "print('hello from the child')", output=output))
    assert eventually(lambda: "hello from the child" in output.read_text())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_children_do_not_outlive_a_killed_supervisor() -> None:
    runner_code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from tools.supervisor import ChildSpec, Supervisor

        child = Supervisor().start(
            ChildSpec(name="sleeper", command=[sys.executable, "-c", {SLEEPER!r}], env={{}},
                      cwd=Path.cwd())
        )
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    runner = subprocess.Popen(
        [sys.executable, "-c", runner_code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stdout is not None
        child = int(runner.stdout.readline())
        assert not gone(child)
    finally:
        runner.kill()
        runner.wait()
        if runner.stdout is not None:
            runner.stdout.close()
    assert eventually(lambda: gone(child))
