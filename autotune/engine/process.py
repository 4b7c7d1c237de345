"""Low-level process helpers: spawn in a new session, kill a whole tree, find a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import psutil


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (a clash is retried by the launcher)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def spawn(
    argv: Sequence[str], *, log: IO[bytes], env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (and process group), stdout and stderr to ``log``."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
    )


_GUARD = """
import os, signal, sys, time
pgid = int(sys.argv[1])
try:
    said = sys.stdin.buffer.read()
except BaseException:
    said = b""
if said != b"done":  # the worker died without stopping its engine: stop the engine's group
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                sys.exit(0)
            time.sleep(0.1)
"""


def guard(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """A watchdog for an engine started with ``spawn``: it waits on a pipe from this process
    and, should this process die (SIGKILL, a crash) without calling ``release``, kills the
    engine's process group. Only the group this process started is touched."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _GUARD, str(proc.pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def release(watchdog: subprocess.Popen[bytes]) -> None:
    """The engine was stopped here: the watchdog exits without touching anything."""
    with contextlib.suppress(OSError, ValueError):
        if watchdog.stdin is not None:
            watchdog.stdin.write(b"done")
            watchdog.stdin.close()
    try:
        watchdog.wait(timeout=5)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_tree(proc: subprocess.Popen[bytes], *, grace_s: float = 10.0) -> None:
    """SIGTERM the process group and every descendant, then SIGKILL what is left after
    ``grace_s``. Only processes this launcher started (and their children) are touched."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    tree = _descendants(proc.pid)
    _signal_group(pgid, signal.SIGTERM)  # even when the leader is gone, its group may not be
    for child in tree:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not any(_alive(c) for c in tree) and not _group_alive(pgid):
            return
        tree.extend(c for c in _descendants(proc.pid) if c not in tree)
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    for child in tree:
        with contextlib.suppress(psutil.Error):
            child.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    psutil.wait_procs(tree, timeout=5)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # Zombies still count for killpg; look for a live member.
    for p in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if os.getpgid(p.pid) == pgid and _alive(p):
                return True
    return False


def read_tail(path: Path, *, max_bytes: int = 2_000_000) -> str:
    """The end of a log file as text (the whole file when small)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
