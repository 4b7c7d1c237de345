"""Opening a study's storage: RDB URLs get Optuna's heartbeat, PostgreSQL its installed
driver, and SQLite transactions that really lock.

Optuna claims an enqueued trial with ``SELECT … FOR UPDATE`` then ``UPDATE``. PostgreSQL
locks the row; SQLite ignores ``FOR UPDATE``, and Python's sqlite3 only opens a transaction
before the write, so two worker processes could both read WAITING and both run the same
trial (seen in CI with four ``--gpus`` workers). Every SQLite transaction here starts with
``BEGIN IMMEDIATE``: the second worker waits, then reads RUNNING and asks for another.
"""

from __future__ import annotations

import random
import sqlite3
import stat
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from autotune.engine.safety import redact_url
from autotune.errors import StorageError
from autotune.search.workers.coordination import heartbeat_s, retry_stale

SQLITE_BUSY_TIMEOUT_S = 60
_SQLITE_MAGIC = b"SQLite format 3\x00"
SETTLE_S = 3.0  # a study database another tuner is creating takes less to get its tables


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL; None for another database or memory."""
    if not url.startswith("sqlite:"):
        return None
    try:
        from sqlalchemy.engine import make_url

        database = make_url(url).database
    except Exception:  # an unparsable URL: opening it says why
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def check_sqlite(url: str, *, must_exist: bool = False) -> None:
    """Refuse, before Optuna creates its tables in it, a SQLite file that is not a study
    database: empty (zero bytes), not SQLite, truncated, or another program's database.
    ``must_exist``: reading studies, a missing file is an error too (none is created).
    Another tuner sharing the storage may be creating it right now: an empty, truncated or
    table-less file gets ``SETTLE_S`` to become a study database before it is refused."""
    path = sqlite_file(url)
    if path is None:
        return
    where = f"study storage {redact_url(url)}"
    if "\x00" in str(path):
        raise StorageError(f"{where!r}: a file name cannot hold a NUL character")
    deadline = time.monotonic() + SETTLE_S
    while True:
        try:
            _check_file(path, where, must_exist=must_exist)
            return
        except _Settling as exc:
            if time.monotonic() >= deadline:
                raise StorageError(str(exc)) from None
            time.sleep(0.2)


class _Settling(Exception):
    """A verdict that a database being created by another process passes through."""


def _check_file(path: Path, where: str, *, must_exist: bool) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        if must_exist:
            raise StorageError(f"{where}: the database file does not exist") from None
        if not path.parent.is_dir():
            raise StorageError(f"{where}: the directory {path.parent} does not exist") from None
        return
    except OSError as exc:
        raise StorageError(f"{where}: cannot open it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise StorageError(f"{where}: not a regular file")
    if info.st_size == 0:
        if any(path.with_name(path.name + s).exists() for s in ("-journal", "-wal")):
            return  # another process is creating it right now
        raise _Settling(
            f"{where} is an empty file, not a study database: remove it or give another --storage"
        )
    try:
        with path.open("rb") as f:
            head = f.read(100)
    except OSError as exc:
        raise StorageError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if not head.startswith(_SQLITE_MAGIC):
        raise StorageError(f"{where} is not a SQLite database; give another --storage")
    if _truncated(head, info.st_size):
        raise _Settling(f"{where} is truncated (damaged): restore it or give another --storage")
    tables = _tables(path, where)
    if tables and "studies" not in tables:
        raise _Settling(
            f"{where} is another program's SQLite database (no Optuna tables); "
            "give another --storage"
        )


def _truncated(head: bytes, size: int) -> bool:
    """The header's page count (valid when its change counters agree) needs more bytes."""
    if len(head) < 100:
        return True
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    valid = head[24:28] == head[92:96]
    return valid and pages * page_size > size


def _tables(path: Path, where: str) -> set[str]:
    try:
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S
        )
        try:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StorageError(f"{where}: cannot read it ({exc})") from None
    return {str(name) for (name,) in rows}


def driver_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is here."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    try:
        import psycopg  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def rdb_storage(url: str) -> optuna.storages.BaseStorage | str:
    """An RDB URL becomes heartbeat-enabled storage (schema creation retried: several workers
    may create it at once); other URLs are returned as they are."""
    if "://" not in url or url.startswith(("journal", "grpc")):
        return url
    check_sqlite(url)
    beat = heartbeat_s()
    sqlite = url.startswith("sqlite")
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if sqlite:
        engine = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    last: Exception | None = None
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # "heartbeat_interval is experimental"
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    driver_url(url),
                    engine_kwargs=engine,
                    heartbeat_interval=beat,
                    grace_period=3 * beat,
                    heartbeat_stale_trial_callback=retry_stale,
                )
        except ImportError:
            raise StorageError(
                f"cannot open study storage {redact_url(url)}: its database driver is not "
                "installed (pip install 'vllm-autotune[postgres]')"
            ) from None
        except Exception as exc:  # a concurrent schema creation, a server still starting
            last = exc
            time.sleep(0.5 + random.random() * (attempt + 1))
            continue
        if sqlite:
            lock_sqlite_transactions(storage.engine)
        return storage
    raise StorageError(f"cannot open study storage {redact_url(url)}: {failure(last)}")


def failure(exc: BaseException | None) -> str:
    """A storage error's first line, passwords masked (SQLAlchemy adds lines of background)."""
    text = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
    return redact_url(text or type(exc).__name__)[:300]


def lock_sqlite_transactions(engine: Any) -> None:
    """Each transaction takes SQLite's write lock when it begins (SQLAlchemy's recipe for
    pysqlite: the driver's own BEGIN off, ours on); pooled connections are reopened."""
    from sqlalchemy import event

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    engine.dispose()
