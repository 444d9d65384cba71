"""Keep child processes running: restart one that exits unexpectedly, with exponential back-off.

Each child has a watcher thread that starts it, waits for it and, unless the exit was asked for
with stop(), starts it again after a delay that doubles with every quick failure (0.5 s, 1 s,
2 s ... up to 10 s) and falls back to the first delay once the child has stayed up a while.
Every exit and every restart is logged as one line.

Children run in their own session, so a Ctrl-C in the terminal reaches only the runner, which
stops them in its own order. On Linux each child also gets PR_SET_PDEATHSIG: if the runner dies
without stopping them (SIGKILL, a crash), the kernel sends every child its stop signal, so none
keeps running on its own.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# <linux/prctl.h>
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Backoff:
    """Delays between restarts: initial * factor**(n-1) before the n-th restart in a row, at most
    cap; a child that stayed up for stable_after seconds starts the count again."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 10.0
    stable_after: float = 10.0

    def delay(self, restart: int) -> float:
        """Seconds to wait before the restart-th consecutive restart (1-based)."""
        return float(min(self.cap, self.initial * self.factor ** (restart - 1)))


@dataclass(frozen=True)
class ChildSpec:
    """How to run one supervised process."""

    name: str
    command: Sequence[str]
    env: Mapping[str, str] = field(repr=False)
    cwd: Path
    output: Path | None = None
    """Append stdout and stderr to this file; None writes them to the runner's terminal."""
    stop_signal: signal.Signals = signal.SIGTERM
    """Asks the child to stop gracefully; also what it receives if the runner dies."""
    stop_timeout: float = 10.0
    """Seconds the child gets to stop before SIGKILL."""
    user: str | None = None
    """Run as this system user (needs root); None keeps the runner's user."""
    before_start: Callable[[], None] | None = None
    """Called before every start, restarts included (e.g. to clear a stale lock file)."""


def _print_line(line: str) -> None:
    """Default log: one line on the runner's stdout, in the runner's voice."""
    print(f"meshgram: {line}", flush=True)


class Supervisor:
    """Starts children and restarts any that exits without stop() having been called."""

    def __init__(self, backoff: Backoff | None = None, log: Callable[[str], None] = _print_line):
        self._backoff = backoff or Backoff()
        self._log = log
        self._lock = threading.Lock()
        self._children: dict[str, _Child] = {}

    def start(self, spec: ChildSpec) -> subprocess.Popen[bytes]:
        """Start spec's process, keep it running until stop(), and return its first process.

        Raises ValueError when a child of that name is already supervised, and whatever starting
        it raised (OSError...) when even the first start fails; nothing is supervised then.
        """
        child = _Child(spec)
        with self._lock:
            if spec.name in self._children:
                raise ValueError(f"{spec.name} is already supervised")
            self._children[spec.name] = child
        child.thread = threading.Thread(
            target=self._keep_running, args=(child,), name=f"supervise-{spec.name}", daemon=True
        )
        child.thread.start()
        child.first_start.wait()
        if child.first_error is not None:
            child.thread.join()
            with self._lock:
                del self._children[spec.name]
            raise child.first_error
        process = child.current()
        assert process is not None
        return process

    def process(self, name: str) -> subprocess.Popen[bytes] | None:
        """The current process of a supervised child (None when not supervised)."""
        with self._lock:
            child = self._children.get(name)
        return None if child is None else child.current()

    def names(self) -> list[str]:
        """Names of the supervised children, in the order they were started."""
        with self._lock:
            return list(self._children)

    def stop(self, name: str) -> None:
        """Stop a child on purpose and never restart it: its stop signal, then SIGKILL after its
        stop timeout. Does nothing for a name that is not supervised."""
        with self._lock:
            child = self._children.pop(name, None)
        if child is not None:
            child.stop()

    def stop_all(self) -> None:
        """Stop every child, the most recently started first."""
        for name in reversed(self.names()):
            self.stop(name)

    def _keep_running(self, child: _Child) -> None:
        """Watcher thread of one child: start it, wait, restart it after the back-off delay."""
        name = child.spec.name
        restarts = 0
        while True:
            began = time.monotonic()
            try:
                process = child.spawn()
            except Exception as exc:
                if not child.first_start.is_set():
                    child.first_error = exc
                    child.first_start.set()
                    return
                outcome, returncode = f"could not be started ({exc})", None
            else:
                child.first_start.set()
                if process is None:
                    return
                if restarts:
                    self._log(f"{name} restarted (pid {process.pid}, restart {restarts})")
                process.wait()
                if child.stopping.is_set():
                    return
                returncode = process.returncode
                ended = _describe_exit(returncode)
                outcome = f"(pid {process.pid}) {ended} after {time.monotonic() - began:.1f}s"
            stable = time.monotonic() - began >= self._backoff.stable_after
            restarts = 1 if stable else restarts + 1
            delay = self._backoff.delay(restarts)
            self._log(
                f"{name} {outcome}; restarting it in {delay:g}s (restart {restarts})"
                + _why_hint(child.spec, restarts, returncode)
            )
            if child.stopping.wait(delay):
                return


class _Child:
    """One supervised child: its spec, current process and stop request."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.thread: threading.Thread | None = None
        self.first_start = threading.Event()
        self.first_error: Exception | None = None
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def current(self) -> subprocess.Popen[bytes] | None:
        """The latest process started for this child."""
        with self._lock:
            return self._process

    def spawn(self) -> subprocess.Popen[bytes] | None:
        """Start a new process, unless a stop was requested (then None)."""
        # Under the lock, so that stop() either sees this process or prevents it.
        with self._lock:
            if self.stopping.is_set():
                return None
            if self.spec.before_start is not None:
                self.spec.before_start()
            self._process = _popen(self.spec)
            return self._process

    def stop(self) -> None:
        """Ask the process to stop, SIGKILL it after the stop timeout, and end the watcher."""
        with self._lock:
            self.stopping.set()
            process = self._process
        if process is not None:
            process.send_signal(self.spec.stop_signal)
        assert self.thread is not None
        self.thread.join(self.spec.stop_timeout)
        if self.thread.is_alive() and process is not None:
            process.kill()
        self.thread.join()


def _popen(spec: ChildSpec) -> subprocess.Popen[bytes]:
    """Start the process of spec in its own session, tied to the life of the calling thread."""
    out = None if spec.output is None else spec.output.open("ab")
    try:
        return subprocess.Popen(  # noqa: S603 - commands come from the runner, not from users
            list(spec.command),
            cwd=spec.cwd,
            env=dict(spec.env),
            stdout=out,
            stderr=None if out is None else subprocess.STDOUT,
            start_new_session=True,
            user=spec.user,
            preexec_fn=_die_with_parent(spec.stop_signal),
        )
    finally:
        # The child has its own copy of the descriptor.
        if out is not None:
            out.close()


def _die_with_parent(stop_signal: signal.Signals) -> Callable[[], None] | None:
    """On Linux, a preexec_fn that makes the kernel send stop_signal to the child when the thread
    that started it ends (the runner exiting or being killed); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    # Loaded here, before fork: the child must not load libraries between fork and exec.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(stop_signal))
        # The runner may have died between fork and prctl; then nobody would ever signal us.
        if os.getppid() != parent:
            os._exit(1)

    return set_parent_death_signal


def _describe_exit(returncode: int) -> str:
    """'exited with code 1' or 'was killed by SIGKILL', from a Popen return code."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


def _why_hint(spec: ChildSpec, restarts: int, returncode: int | None) -> str:
    """After repeated quick failures of a child that exited by itself (not killed by a signal,
    not unable to start, which the line already explains), say where its own explanation is."""
    if restarts < 2 or returncode is None or returncode < 0:
        return ""
    where = "its last lines above" if spec.output is None else str(spec.output)
    return f"; it keeps failing soon after start, see {where} for why"
