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
import time
import warnings
from typing import Any

import optuna

from autotune.engine.safety import redact_url
from autotune.errors import StorageError
from autotune.search.workers.coordination import heartbeat_s, retry_stale

SQLITE_BUSY_TIMEOUT_S = 60


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
    raise StorageError(f"cannot open study storage {redact_url(url)}: {redact_url(str(last))}")


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
