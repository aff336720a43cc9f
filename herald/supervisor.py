"""A small process supervisor for `herald run`: each child its own process, output merged line by line
under the child's name, a child that dies restarted after a growing pause, and a stop that asks every
child (SIGTERM) and then insists (SIGKILL) after a grace period."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class Child:
    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Running:
    child: Child
    process: subprocess.Popen[bytes]
    started: float
    tier: int
    restarts: int = 0
    backoff: float = 0.0
    due: float = 0.0  # when a dead child is started again (time.monotonic())


class Supervisor:
    """Each `start` call adds a tier of children (infrastructure first, then the services on it); `stop`
    stops the tiers in reverse, so the broker and the database outlive the services that use them."""

    def __init__(
        self,
        *,
        out: IO[str] | None = None,
        grace: float = 15.0,
        first_backoff: float = 1.0,
        max_backoff: float = 30.0,
        stable_after: float = 60.0,
        width: int = 12,
    ) -> None:
        self._out = out or sys.stdout
        self._grace = grace
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._stable_after = stable_after
        self._running: list[_Running] = []
        self._lock = threading.Lock()  # one line at a time on the shared output; the list of children
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._width = width  # of the name column, so that every line's text starts in the same place

    def say(self, line: str, name: str = "herald run") -> None:
        with self._lock:
            self._out.write(f"{name:<{self._width}} | {line}\n")
            self._out.flush()

    def show(self, text: str) -> None:
        """Text for the person watching, unprefixed and never split by a child's line."""
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()

    def start(self, children: Sequence[Child]) -> None:
        """Starts a tier of children, and the watcher that restarts any that dies."""
        self._width = max([self._width, *(len(c.name) for c in children)])
        with self._lock:
            tier = 1 + max((r.tier for r in self._running), default=-1)
        for child in children:
            running = _Running(child, self._spawn(child), time.monotonic(), tier)
            with self._lock:
                self._running.append(running)
        if not self._watcher.is_alive():
            self._watcher.start()

    def pids(self) -> list[int]:
        with self._lock:
            return [r.process.pid for r in self._running if r.process.poll() is None]

    def restarts(self, name: str) -> int:
        with self._lock:
            return sum(r.restarts for r in self._running if r.child.name == name)

    def _spawn(self, child: Child) -> subprocess.Popen[bytes]:
        # A process group of its own: Ctrl-C at the terminal reaches the supervisor alone, which then stops
        # the children in its own order (the broker and database after the services that use them).
        process = subprocess.Popen(
            list(child.argv),
            env={**os.environ, **child.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        threading.Thread(
            target=self._relay, args=(child.name, process), name=f"relay-{child.name}", daemon=True
        ).start()
        return process

    def _relay(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            self.say(raw.decode(errors="replace").rstrip("\n"), name)

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            with self._lock:
                running = list(self._running)
            for r in running:
                self._tend(r)

    def _tend(self, r: _Running) -> None:
        code = r.process.poll()
        if code is None or self._stopping.is_set():
            return
        now = time.monotonic()
        if not r.due:
            # A child that ran a good while before dying starts again at once-ish; one that keeps dying waits
            # longer each time, so that a broken setting does not spin the machine.
            ran = now - r.started
            r.backoff = (
                self._first_backoff
                if ran > self._stable_after
                else min(self._max_backoff, max(self._first_backoff, r.backoff * 2))
            )
            r.due = now + r.backoff
            self.say(f"{r.child.name} exited with {code}; restarting in {r.backoff:.1f} s")
            return
        if now >= r.due:
            with self._lock:
                if self._stopping.is_set():
                    return
                r.process, r.started, r.due = self._spawn(r.child), now, 0.0
                r.restarts += 1

    def stop(self) -> dict[str, int]:
        """Stops the restarts, then each tier from the last: SIGTERM, and SIGKILL to any child still
        running after the grace period. Returns each child's exit code (0: it stopped cleanly)."""
        self._stopping.set()
        with self._lock:
            running = list(self._running)
        codes: dict[str, int] = {}
        for tier in sorted({r.tier for r in running}, reverse=True):
            codes.update(self._stop_tier([r for r in running if r.tier == tier]))
        return codes

    def _stop_tier(self, tier: list[_Running]) -> dict[str, int]:
        for r in tier:
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        codes: dict[str, int] = {}
        for r in tier:
            try:
                codes[r.child.name] = r.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{r.child.name} did not stop within {self._grace:.0f} s: killed")
                r.process.kill()
                codes[r.child.name] = r.process.wait()
        return codes


def processes() -> dict[int, tuple[int, str]]:
    """Every process that can be read: pid -> (parent pid, command line), from Linux's /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return found


def descendants(roots: Iterable[int], table: dict[int, tuple[int, str]] | None = None) -> dict[int, str]:
    """Every process below `roots` (children, theirs, and so on; not the roots): pid -> command line. A
    stack's whole tree, to watch or to check that none of it outlives a stop."""
    table = processes() if table is None else table
    found: dict[int, str] = {}
    parents = set(roots)
    while parents:
        children = {p: cmd for p, (ppid, cmd) in table.items() if ppid in parents and p not in found}
        found.update(children)
        parents = set(children)
    return found
