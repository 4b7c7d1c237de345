"""A throw-away PostgreSQL server for tests: Debian's binaries, a temporary data directory,
127.0.0.1 on a free port, stopped (and removed) afterwards even when the test fails.

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user (created by
Debian's package) or ``nobody``, with a data directory it owns."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DB = "autotune"


def bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: PATH, then Debian's versioned directories."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    for path in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True):
        return Path(path).parent
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_user() -> list[str]:
    """The prefix that runs a command as an unprivileged user (none when not root)."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            return ["runuser", "-u", user, "--"]
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


def _owner() -> tuple[int, int] | None:
    prefix = _as_user()
    if not prefix:
        return None
    entry = pwd.getpwnam(prefix[2])
    return entry.pw_uid, entry.pw_gid


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server and yield its URL (user ``autotune``, trust authentication on 127.0.0.1)."""
    bin_path = bindir()
    if bin_path is None:
        raise RuntimeError("PostgreSQL binaries not found")
    root = Path(tempfile.mkdtemp(prefix="autotune-pg-"))
    owner = _owner()
    if owner is not None:
        os.chown(root, *owner)
    data, log, port = root / "data", root / "server.log", _free_port()
    run = _as_user()

    def call(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*run, *argv], capture_output=True, text=True, timeout=120, check=False, cwd=root
        )

    started = False
    try:
        done = call(
            str(bin_path / "initdb"), "-D", str(data), "-U", DB, "-A", "trust", "-E", "UTF8"
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=100"
        done = call(str(bin_path / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log),
                    "-w", "-t", "60", "start")  # fmt: skip
        started = done.returncode == 0
        if not started:
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stdout}{done.stderr}{text}")
        _create_db(bin_path, run, port, root)
        yield f"postgresql://{DB}@127.0.0.1:{port}/{DB}"
    finally:
        if started:
            call(str(bin_path / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _create_db(bin_path: Path, run: list[str], port: int, root: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(
            [*run, str(bin_path / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", DB, DB],
            capture_output=True, text=True, timeout=60, check=False, cwd=root,
        )  # fmt: skip
        if done.returncode == 0 or "already exists" in done.stderr:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"createdb failed: {done.stderr}")
        time.sleep(0.5)
