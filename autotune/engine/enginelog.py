"""An engine's log file: a new one for every launch attempt, never appended to, readable by its
owner only, and the engine's output copied into it line by line with secrets masked (the
engine prints its arguments, ``--api-key`` included; argparse echoes what it rejects)."""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from autotune.masking import mask

MAX_LINE = 1 << 20  # a longer line without a newline is copied in pieces
_POLL_S = 0.5


def _names(path: Path) -> Iterator[Path]:
    yield path
    for n in itertools.count(2):
        yield path.with_name(f"{path.stem}-{n}{path.suffix}")


def unused(path: Path) -> Path:
    """``path``, or ``STEM-2.SUFFIX``, ``STEM-3.SUFFIX``... : the first name not taken (a trial
    number of an earlier run, in the same state directory with another ``--storage``)."""
    return next(p for p in _names(path) if not p.exists() and not p.is_symlink())


def create(path: Path) -> tuple[Path, BinaryIO]:
    """Create ``path``, or the next name :func:`unused` would give when it exists (another
    worker was first, a retried port), mode 0600; never opens an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for candidate in _names(path):
        try:
            fd = os.open(candidate, flags, 0o600)
        except FileExistsError:
            continue
        return candidate, os.fdopen(fd, "wb")
    raise AssertionError("unreachable")  # pragma: no cover


class EngineLog:
    """``sink`` is the engine's stdout and stderr (a pipe); a thread copies what comes out of it
    into ``path``, masking the secrets in ``secrets`` (and every remembered one)."""

    def __init__(self, path: Path, *, secrets: Sequence[str] = ()) -> None:
        self.path, self._file = create(path)
        self._secrets = tuple(secrets)
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        self._fd = read_fd
        self.sink: BinaryIO = os.fdopen(write_fd, "wb")
        self._pending = b""
        self._eof = False
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"log {self.path.name}", daemon=True)
        self._thread.start()

    def write(self, text: str) -> None:
        """A line of autotune's own (the command line), masked too."""
        with self._lock:
            if not self._closed:
                self._file.write(mask(text, values=self._secrets).encode())
                self._file.flush()

    def spawned(self) -> None:
        """The engine holds its copy of the pipe's write end: close this one (the output then
        ends when the engine's last process exits)."""
        self.sink.close()

    def sync(self) -> None:
        """Everything the engine wrote so far is in the file (a last unfinished line too)."""
        with self._lock:
            if not self._closed:
                self._pump()
                self._copy(whole=True)

    def close(self, *, timeout_s: float = 5.0) -> None:
        """Copy what is left (waiting up to ``timeout_s`` for the output to end) and close."""
        self.sink.close()
        self._thread.join(timeout_s)
        with self._lock:
            if self._closed:
                return
            self._pump()
            self._copy(whole=True)
            self._closed = True
            os.close(self._fd)
            self._file.close()

    def _run(self) -> None:
        poller = select.poll()  # not select(): a descriptor number may be above 1024
        poller.register(self._fd, select.POLLIN)
        while True:
            with contextlib.suppress(OSError):
                poller.poll(_POLL_S * 1000)
            with self._lock:
                if self._closed or not self._pump():
                    return

    def _pump(self) -> bool:
        """Copy what can be read now (the lock held); False once the output has ended."""
        while not self._eof:
            try:
                chunk = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return True
            except OSError:
                chunk = b""
            if not chunk:
                self._eof = True
                self._copy(whole=True)
                break
            self._pending += chunk
            self._copy(whole=len(self._pending) > MAX_LINE)
        return False

    def _copy(self, *, whole: bool) -> None:
        """Write the finished lines (``whole``: everything) pending, masked. A failed write (a
        full disk) loses them but the pipe is still drained: a blocked engine would hang."""
        cut = len(self._pending) if whole else self._pending.rfind(b"\n") + 1
        if not cut:
            return
        data, self._pending = self._pending[:cut], self._pending[cut:]
        text = mask(data.decode("utf-8", "surrogateescape"), values=self._secrets)
        with contextlib.suppress(OSError, ValueError):
            self._file.write(text.encode("utf-8", "surrogateescape"))
            self._file.flush()
