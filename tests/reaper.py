"""Run a command and report every process it left behind.

``python tests/reaper.py OUT.json -- COMMAND ...`` makes itself a child subreaper
(``PR_SET_CHILD_SUBREAPER``), so that every process the command starts, and every process
those start, stays its descendant even after its parent exits; it starts COMMAND in a new
session (a terminal's Ctrl-C is a SIGINT to the command's process group), prints
``{"pid": ...}`` on its first stdout line, waits for COMMAND to exit, and writes OUT.json:
the exit code, the monotonic time of the exit, and the descendants still alive right at
the exit and again up to ``LINGER_S`` later (pid and command line each).
Only the processes of that one command are listed: other Ray instances on the machine are
not its descendants.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
LINGER_S = 3.0


def descendants(root: int) -> dict[int, str]:
    """Living (not zombie) descendants of ``root``: pid -> command line."""
    children: dict[int, list[int]] = {}
    state: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        state[int(entry.name)] = fields[0]
    found: dict[int, str] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            stack.append(child)
            if state.get(child) != "Z":
                found[child] = command_line(child)
    return found


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def reap() -> None:
    """Collect every exited child (orphans adopted by this subreaper included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    out = Path(sys.argv[1])
    command = sys.argv[sys.argv.index("--") + 1 :]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl: {os.strerror(ctypes.get_errno())}")
    process = subprocess.Popen(command, start_new_session=True)
    print(json.dumps({"pid": process.pid}), flush=True)
    code = process.wait()
    exited = time.monotonic()
    reap()
    at_exit = descendants(os.getpid())
    deadline = exited + LINGER_S
    later = descendants(os.getpid())
    while later and time.monotonic() < deadline:
        time.sleep(0.05)
        reap()
        later = descendants(os.getpid())
    report = {
        "code": code,
        "exited": exited,
        "at_exit": {str(k): v for k, v in at_exit.items()},
        "later": {str(k): v for k, v in later.items()},
    }
    out.write_text(json.dumps(report), encoding="utf-8")
    for pid in later:  # never leave them to the next test
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            continue
    reap()


if __name__ == "__main__":
    main()
