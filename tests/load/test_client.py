"""The load generator against a real local HTTP server that streams like ``vllm serve``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from autotune.load.client import BenchResult, run, run_benchmark
from autotune.load.request import Request
from autotune.load.workload import Workload, build_requests

TOKEN_S = 0.002  # per generated token (and once for the prefill)
MAX_IMAGES = 2
IMAGE_LIMIT_MESSAGE = (
    f"At most {MAX_IMAGES} image(s) may be provided in one prompt. (parameter=image)"
)


def _image_count(messages: list[dict[str, object]]) -> int:
    return sum(
        1
        for m in messages
        if isinstance(m["content"], list)
        for part in m["content"]
        if part["type"] == "image_url"
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    request_queue_size = 128

    def __init__(self, *, usage: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.usage = usage
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.connections: set[socket.socket] = set()
        self.bodies: list[tuple[str, dict[str, object]]] = []
        self.in_flight = self.peak = 0
        self.thread = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up are part of the tests

    def stop(self) -> None:
        """Die like a killed process: stop listening and cut every open connection."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        self.shutdown()
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.server_close()
        self.thread.join()


class _Handler(BaseHTTPRequestHandler):
    """/v1/completions and /v1/chat/completions, streamed; prompt "FAIL" gives a 400, and so
    does a chat request with more than 2 images (vLLM's ``--limit-mm-per-prompt``)."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = self.path == "/v1/chat/completions"
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        if prompt == "FAIL":
            error = {"error": {"message": "bad prompt", "type": "BadRequestError", "code": 400}}
            return self._reply(400, json.dumps(error).encode(), "application/json")
        if prompt == "CRASH":
            return self._reply(500, b"Internal Server Error", "text/plain")
        if chat and _image_count(body["messages"]) > MAX_IMAGES:
            error = {"error": {"message": IMAGE_LIMIT_MESSAGE, "type": "BadRequestError"}}
            return self._reply(400, json.dumps(error).encode(), "application/json")
        srv = self.server
        with srv.lock:
            srv.bodies.append((self.path, body))
            srv.in_flight += 1
            srv.peak = max(srv.peak, srv.in_flight)
        try:
            n = body["max_completion_tokens" if chat else "max_tokens"]
            self._stream(chat=chat, prompt_tokens=len(prompt), n=n)
        except OSError:
            self.close_connection = True  # the client went away
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _stream(self, *, chat: bool, prompt_tokens: int, n: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        time.sleep(TOKEN_S)
        for i in range(n):
            if self.server.stopped.is_set():
                self.close_connection = True  # cut mid-body, no final chunk
                return
            # The second token carries no text yet (an incomplete UTF-8 character in vLLM).
            text = "" if i == 1 else f"t{i} "
            choice = {"delta": {"content": text}} if chat else {"text": text}
            self._event(json.dumps({"choices": [{"index": 0, **choice}]}))
            time.sleep(TOKEN_S)
        if self.server.usage:
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n}
            self._event(json.dumps({"choices": [], "usage": usage}))
        self._event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")

    def _event(self, data: str) -> None:
        payload = f"data: {data}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(usage=True)
    yield srv
    srv.stop()


def _completion(prompt: list[int] | str, max_tokens: int = 6) -> Request:
    return Request(prompt=prompt, messages=None, max_tokens=max_tokens, ignore_eos=True)


def _bench(srv: _Server, requests: list[Request], **kwargs: object) -> BenchResult:
    return run(base_url=srv.url, model="m", requests=requests, **kwargs)  # type: ignore[arg-type]


def test_streamed_run_metrics(server: _Server) -> None:
    progress: list[tuple[int, int]] = []
    requests = [_completion([100 + i] * 8) for i in range(12)]
    result = _bench(server, requests, on_progress=lambda d, t: progress.append((d, t)))
    m = result.metrics
    assert result.aborted is None and result.errors == () and result.statuses == {}
    assert (m.completed, m.failed) == (12, 0)
    assert (m.input_tokens, m.output_tokens) == (12 * 8, 12 * 6)  # from usage
    assert 0 < m.ttft_ms_p50 <= m.ttft_ms_p99 and 0 < m.e2e_ms_p50 <= m.e2e_ms_p99
    assert m.itl_ms_p50 > 0 and m.tpot_ms_p50 > 0
    assert m.request_throughput > 0 and m.output_throughput == pytest.approx(72 / m.duration_s)
    assert m.total_token_throughput == pytest.approx((96 + 72) / m.duration_s)
    assert m.max_concurrency == 12 and 1 <= server.peak <= 12
    # 6 tokens, one of them without text: 5 content chunks, so 4 gaps per request.
    assert all(r.ok and len(r.itls_s) == 4 and r.status == 200 for r in result.records)
    assert all(r.ttft_s is not None and 0 < r.ttft_s < r.e2e_s for r in result.records)
    assert progress == [(i, 12) for i in range(1, 13)]
    path, body = server.bodies[0]
    assert path == "/v1/completions"
    assert body["stream"] is True and body["ignore_eos"] is True and body["temperature"] == 0
    assert body["stream_options"] == {"include_usage": True} and body["model"] == "m"


def test_chat_requests_and_async_api(server: _Server) -> None:
    chat = Request(
        prompt=None, messages=[{"role": "user", "content": "hi"}], max_tokens=4, ignore_eos=True
    )
    result = asyncio.run(run_benchmark(base_url=server.url + "/", model="m", requests=[chat] * 3))
    assert result.metrics.completed == 3 and result.metrics.output_tokens == 12
    assert {path for path, _ in server.bodies} == {"/v1/chat/completions"}
    assert server.bodies[0][1]["messages"] == [{"role": "user", "content": "hi"}]


def test_without_usage_counts_content_chunks() -> None:
    srv = _Server(usage=False)
    try:
        result = _bench(srv, [_completion([11, 12, 13])] * 2)
    finally:
        srv.stop()
    assert result.metrics.output_tokens == 2 * 5
    assert result.metrics.input_tokens == 2 * 3  # the length of the token-id prompt


def test_http_errors_are_collected_with_counts(server: _Server) -> None:
    requests = [_completion([50] * 4)] * 5 + [_completion("FAIL")] * 3 + [_completion("CRASH")]
    result = _bench(server, requests)
    assert (result.metrics.completed, result.metrics.failed) == (5, 4)
    assert result.errors == ("400 bad prompt (x3)", "500 Internal Server Error (x1)")
    assert result.statuses == {400: 3, 500: 1}
    assert result.aborted is None
    failed = [r for r in result.records if not r.ok]
    assert {r.status for r in failed} == {400, 500} and all(r.ttft_s is None for r in failed)


def test_max_concurrency_bounds_requests_in_flight(server: _Server) -> None:
    result = _bench(server, [_completion([7] * 4, max_tokens=10)] * 8, max_concurrency=2)
    assert result.metrics.completed == 8
    assert server.peak <= 2 and result.metrics.max_concurrency == 2


def test_should_abort_cancels_quickly(server: _Server) -> None:
    t0 = time.perf_counter()

    def should_abort() -> str | None:
        return "engine died" if time.perf_counter() - t0 > 0.3 else None

    # Each request streams for 2 s or more: none completed means none was waited for.
    result = _bench(server, [_completion([9] * 4, max_tokens=1000)] * 10, should_abort=should_abort)
    assert result.aborted == "engine died"
    assert (result.metrics.completed, result.metrics.failed) == (0, 10)
    assert result.errors == ("cancelled (x10)",)


def test_timeout_aborts(server: _Server) -> None:
    # Each request streams for 2 s or more: all failed means the run did not wait for them.
    result = _bench(server, [_completion([9] * 4, max_tokens=1000)] * 3, timeout_s=0.3)
    assert result.aborted == "timeout" and result.metrics.failed == 3
    assert result.metrics.completed == 0


def test_server_gone_mid_run_aborts(server: _Server) -> None:
    killer = threading.Thread(target=server.stop)

    def on_progress(done: int, total: int) -> None:
        if done == 8:
            killer.start()  # the engine dies after 8 answers

    try:
        requests = [_completion([5] * 4, max_tokens=20)] * 200
        result = _bench(server, requests, max_concurrency=4, on_progress=on_progress)
    finally:
        killer.join()
    assert result.aborted is not None and result.aborted.startswith("server unreachable: 20 ")
    assert 8 <= result.metrics.completed < 200
    assert result.metrics.completed + result.metrics.failed == 200
    assert any(e.startswith("ConnectError") for e in result.errors)
    assert "cancelled" in " ".join(result.errors)  # the ones never sent


def test_nothing_listening_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run(base_url=f"http://127.0.0.1:{port}", model="m", requests=[_completion([1])] * 3)
    assert result.metrics.failed == 3 and result.metrics.completed == 0
    assert result.aborted is not None and result.aborted.startswith("server unreachable: 3 ")
    assert result.errors[0].startswith("ConnectError") and result.errors[0].endswith("(x3)")
    assert result.statuses == {}


def test_image_chat_requests_are_sent_unchanged_and_limit_errors_kept(server: _Server) -> None:
    requests = build_requests(
        Workload(input_len=6, output_len=4, images_per_request=(1, 4), image_size=(32, 32)),
        num_prompts=24,
        vocab_size=None,
    )
    counts = [_image_count(r.messages or []) for r in requests]
    assert set(counts) == {1, 2, 3, 4}
    result = _bench(server, requests)
    allowed = [r for r, n in zip(requests, counts, strict=True) if n <= MAX_IMAGES]
    assert result.metrics.completed == len(allowed) and result.metrics.failed == 24 - len(allowed)
    assert sorted(json.dumps(body["messages"]) for _, body in server.bodies) == sorted(
        json.dumps(r.messages) for r in allowed
    )
    assert {path for path, _ in server.bodies} == {"/v1/chat/completions"}
    refused = 24 - len(allowed)
    assert result.errors == (f"400 {IMAGE_LIMIT_MESSAGE} (x{refused})",)
    assert result.statuses == {400: refused}
    for record, n in zip(result.records, counts, strict=True):
        if n > MAX_IMAGES:
            assert not record.ok and record.status == 400
            assert record.error == f"400 {IMAGE_LIMIT_MESSAGE}"
        else:
            assert record.ok and record.output_tokens == 4
