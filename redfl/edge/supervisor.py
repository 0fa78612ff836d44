"""Keep a deployment's processes up: restart one that dies, with backoff and a limit.

A :class:`Supervisor` starts each process it is given and, when one exits without being
asked to, starts it again after a pause that doubles with each restart in the last
``window`` seconds (``backoff``, ``2 * backoff``, ... up to ``max_backoff``). A process that
died ``max_restarts`` times within ``window`` is left down, and said so; the others keep
running: one part that fails never takes the deployment down. Every exit and restart is
logged (one line each, through ``log``) and kept in :attr:`Supervisor.restarts`.

The supervisor ends only the processes it started, by their pid (terminate, then kill after
a grace period).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Restart", "Supervisor"]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Restart:
    """One exit of a supervised process, and what the supervisor did about it."""

    name: str
    pid: int
    code: int
    action: str
    """``"restart in <s> s"`` or ``"left down"``."""


@dataclass
class _Child:
    name: str
    command: list[str]
    env: Mapping[str, str] | None
    proc: subprocess.Popen[bytes]
    exits: deque[float] = field(default_factory=deque)
    due: float | None = None  # when to start it again
    down: bool = False  # past the limit: left down


class Supervisor:
    """Processes started, watched and restarted.

    Parameters
    ----------
    max_restarts : int, default 5
        Restarts of one process allowed within ``window`` seconds; past them it is left down.
    window : float, default 60.0
        Seconds over which restarts are counted.
    backoff : float, default 0.5
        Pause before the first restart; doubled for each restart in the window.
    max_backoff : float, default 10.0
        The longest pause.
    log : Callable[[str], None], default: a line on stderr
        Where exits and restarts are told.
    clock : Callable[[], float], default time.monotonic
        Seconds.
    """

    def __init__(
        self,
        max_restarts: int = 5,
        window: float = 60.0,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        log: Callable[[str], None] = _stderr,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_restarts < 0 or window <= 0 or backoff < 0 or max_backoff < backoff:
            raise ValueError(
                "max_restarts >= 0, window > 0 and 0 <= backoff <= max_backoff are required"
            )
        self.max_restarts, self.window = max_restarts, window
        self.backoff, self.max_backoff = backoff, max_backoff
        self.log, self.clock = log, clock
        self.children: dict[str, _Child] = {}
        self.restarts: list[Restart] = []

    def start(self, name: str, command: list[str], env: Mapping[str, str] | None = None) -> int:
        """Start (or start again) process ``name``; its pid."""
        old = self.children.get(name)
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=env)
        child = _Child(name, command, env, proc)
        if old is not None:
            child.exits = old.exits
        self.children[name] = child
        return proc.pid

    def poll(self) -> None:
        """Note the processes that exited and start again those whose pause is over."""
        now = self.clock()
        for child in self.children.values():
            if child.down:
                continue
            if child.due is not None:
                if now >= child.due:
                    pid = self.start(child.name, child.command, child.env)
                    self.log(f"supervisor: started {child.name} again (pid {pid})")
                continue
            code = child.proc.poll()
            if code is None:
                continue
            while child.exits and now - child.exits[0] > self.window:
                child.exits.popleft()
            if len(child.exits) >= self.max_restarts:
                child.down = True
                action = "left down"
                self.log(
                    f"supervisor: {child.name} (pid {child.proc.pid}) exited with {code}, "
                    f"{len(child.exits) + 1} times in {self.window:g} s: left down (the rest "
                    "keeps running)"
                )
            else:
                pause = min(self.max_backoff, self.backoff * 2 ** len(child.exits))
                child.exits.append(now)
                child.due = now + pause
                action = f"restart in {pause:g} s"
                self.log(
                    f"supervisor: {child.name} (pid {child.proc.pid}) exited with {code}; "
                    f"restart {len(child.exits)} of {self.max_restarts} in {self.window:g} s, "
                    f"in {pause:g} s"
                )
            self.restarts.append(Restart(child.name, child.proc.pid, code, action))

    def pid(self, name: str) -> int | None:
        """The pid of ``name`` while it runs."""
        child = self.children.get(name)
        if child is None or child.proc.poll() is not None:
            return None
        return child.proc.pid

    def pids(self) -> list[int]:
        """The pids of the processes that run."""
        return [c.proc.pid for c in self.children.values() if c.proc.poll() is None]

    def kill(self, name: str) -> None:
        """Kill process ``name`` (SIGKILL, by pid) and reap it: it is restarted as if it had
        died (a test's fault)."""
        proc = self.children[name].proc
        proc.kill()
        proc.wait(timeout=10)

    def stop(self, grace: float = 5.0) -> None:
        """Terminate every process (kill after ``grace`` seconds); none is restarted."""
        for child in self.children.values():
            child.down = True
            if child.proc.poll() is None:
                child.proc.terminate()
        for child in self.children.values():
            try:
                child.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(timeout=grace)
