"""Clear before costly: a hub id that is not cached while the hub is offline or unreachable is one
line before any engine starts or any study is created (``tune`` and ``serve``)."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from autotune.app.hub import check_hub_model, hub_offline, unreachable
from autotune.errors import UserError
from autotune.model import resolve_model
from tests.conftest import FAKE_CMD, LLAMA_8B, run_autotune

HUB_ID = "someorg/not-cached"


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed


@pytest.fixture
def hub_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(404)  # any answer: the hub is there
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def nothing_started(state: Path) -> None:
    """No study in the default storage, no engine log, no lease."""
    db = state / "studies.db"
    if db.exists():
        import optuna

        storage = f"sqlite:///{db}"
        assert optuna.study.get_all_study_summaries(storage=storage) == []
    assert not list(state.rglob("trial-*.log"))
    assert not list(state.glob("leases/*"))


@pytest.mark.parametrize("command", ["tune", "serve"])
def test_offline_uncached_hub_id_is_one_line_and_nothing_starts(command: str) -> None:
    done = run_autotune(
        command, HUB_ID, "--gpu", "L4:24", "--vllm-cmd", FAKE_CMD, "--trials", "3", "--quiet",
        env={"HF_HUB_OFFLINE": "1"}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("autotune: error:")]
    assert len(errors) == 1 and errors[0] == done.stderr.strip().splitlines()[-1]
    assert HUB_ID in errors[0] and "HF_HUB_OFFLINE" in errors[0]
    assert str(Path(os.environ["HF_HOME"]) / "hub") in errors[0]  # where it looked
    assert "LocalEntryNotFoundError" not in done.stderr and "(1/3)" not in done.stderr
    nothing_started(Path(os.environ["AUTOTUNE_STATE_DIR"]))


def test_unreachable_hub_is_one_line_before_any_study() -> None:
    endpoint = closed_port()
    done = run_autotune(
        "tune", HUB_ID, "--gpu", "L4:24", "--vllm-cmd", FAKE_CMD, "--trials", "3", "--quiet",
        env={"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0"}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert f"the hub {endpoint} cannot be reached" in last and "hf download" in last
    nothing_started(Path(os.environ["AUTOTUNE_STATE_DIR"]))


def test_reachable_hub_or_cached_model_passes(
    hub_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub_server)
    assert unreachable(hub_server) is None
    check_hub_model(resolve_model(HUB_ID))  # vLLM can download it: no error
    assert unreachable(closed_port(), timeout_s=1.0) is not None
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    assert hub_offline()
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        check_hub_model(resolve_model(HUB_ID))
    monkeypatch.setenv("AUTOTUNE_HUB_CHECK", "0")  # the engine has its own cache
    check_hub_model(resolve_model(HUB_ID))
    monkeypatch.delenv("AUTOTUNE_HUB_CHECK")
    snapshot = Path(os.environ["HF_HOME"]) / "hub" / "models--org--cached" / "snapshots" / "abc1"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(LLAMA_8B))
    check_hub_model(resolve_model("org/cached"))  # in the cache: offline is fine


def test_cache_follows_refs_main(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot ``refs/main`` names is the one huggingface_hub loads, not the newest."""
    repo = Path(os.environ["HF_HOME"]) / "hub" / "models--org--two"
    for commit, layers in (("aaa1", 12), ("bbb2", 40)):
        (repo / "snapshots" / commit).mkdir(parents=True)
        config = {**LLAMA_8B, "num_hidden_layers": layers}
        (repo / "snapshots" / commit / "config.json").write_text(json.dumps(config))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("aaa1")
    spec = resolve_model("org/two")
    assert spec.num_layers == 12 and spec.revision == "aaa1"
    (repo / "refs" / "main").write_text("../../elsewhere")  # never a path
    assert resolve_model("org/two").revision in ("aaa1", "bbb2")
