"""Engine leases: one small file per running engine in the state directory, so that a run can
stop the engines that a dead tuner (killed together with its watchdog) left behind.

A lease records the engine's pid and process start time, its port and GPUs, and the tuner's
pid and start time. ``reap`` kills an engine's process group only when its tuner is gone AND the
process is still the one recorded (same pid and same start time): a recycled pid is never
touched, and nothing without a lease is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

LEASES = "leases"  # under the state directory
KILL_GRACE_S = 10.0
_SAME_START_S = 0.05  # psutil start times of one process agree to well within this


@dataclass(frozen=True)
class Lease:
    """One engine as its tuner started it."""

    pid: int
    started: float  # the engine's process start time (psutil, seconds since the epoch)
    port: int
    gpus: tuple[str, ...] | None  # CUDA_VISIBLE_DEVICES of the engine (None: all)
    tuner_pid: int
    tuner_started: float
    host: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lease:
        gpus = data.get("gpus")
        return cls(
            pid=int(data["pid"]),
            started=float(data["started"]),
            port=int(data["port"]),
            gpus=None if gpus is None else tuple(str(g) for g in gpus),
            tuner_pid=int(data["tuner_pid"]),
            tuner_started=float(data["tuner_started"]),
            host=str(data["host"]),
        )


def lease_dir(state_dir: Path) -> Path:
    return state_dir / LEASES


def start_time(pid: int) -> float | None:
    """The process's start time, or None when there is no such (live) process."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except psutil.Error:
        return None


def _same(pid: int, started: float) -> bool:
    now = start_time(pid)
    return now is not None and abs(now - started) < _SAME_START_S


def hold(directory: Path, *, pid: int, port: int, gpus: Sequence[str] | None) -> Path | None:
    """Record a just-started engine; the lease's path (None when it could not be written: the
    watchdog still guards the engine)."""
    started = start_time(pid)
    me = start_time(os.getpid())
    if started is None or me is None:
        return None
    lease = Lease(
        pid=pid,
        started=started,
        port=port,
        gpus=None if gpus is None else tuple(gpus),
        tuner_pid=os.getpid(),
        tuner_started=me,
        host=socket.gethostname(),
    )
    path = directory / f"engine-{pid}.json"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".part")
        part.write_text(json.dumps(lease.to_dict()))
        part.replace(path)
    except OSError as exc:
        log.warning(f"engine lease not written ({exc}); the watchdog still guards the engine")
        return None
    return path


def release(path: Path | None) -> None:
    """The engine was stopped by its tuner: its lease goes."""
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def read(directory: Path) -> list[tuple[Path, Lease]]:
    """The leases in ``directory`` (unreadable or foreign files are skipped)."""
    out: list[tuple[Path, Lease]] = []
    for path in sorted(directory.glob("engine-*.json")) if directory.is_dir() else []:
        try:
            out.append((path, Lease.from_dict(json.loads(path.read_text()))))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def reap(directory: Path) -> list[Lease]:
    """Stop the engines of this host whose tuner is gone (only when the process is still the
    one recorded) and remove their leases; the leases of live tuners are left alone."""
    reaped: list[Lease] = []
    here = socket.gethostname()
    for path, lease in read(directory):
        if lease.host != here or _same(lease.tuner_pid, lease.tuner_started):
            continue
        if _same(lease.pid, lease.started):
            _kill_group(lease)
            gpus = ",".join(lease.gpus) if lease.gpus is not None else "all"
            log.info(
                f"stopped engine pid {lease.pid} (port {lease.port}, GPUs {gpus}) left running "
                f"by tuner pid {lease.tuner_pid}, which is gone"
            )
            reaped.append(lease)
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    return reaped


def _kill_group(lease: Lease) -> None:
    """SIGTERM (and SIGCONT, for a stopped engine) to the engine's group and its descendants,
    SIGKILL to what is left after the grace period."""
    try:
        proc = psutil.Process(lease.pid)
        tree = [proc, *proc.children(recursive=True)]
        group = os.getpgid(lease.pid) == lease.pid  # spawned as a session leader
    except (psutil.Error, OSError):
        return
    for sig in (signal.SIGTERM, signal.SIGCONT):
        if group:
            with contextlib.suppress(OSError):
                os.killpg(lease.pid, sig)
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)
    _, alive = psutil.wait_procs(tree, timeout=KILL_GRACE_S)
    if not alive:
        return
    if group:
        with contextlib.suppress(OSError):
            os.killpg(lease.pid, signal.SIGKILL)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
