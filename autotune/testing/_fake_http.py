"""The fake engine's OpenAI-compatible HTTP API, served from the batch simulation.

Routes: ``/health``, ``/version``, ``/v1/models``, ``/metrics``, ``/load``, ``/v1/completions``
and ``/v1/chat/completions`` (streamed or not).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import socketserver
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast

from autotune.testing._fake_batch import BatchEngine, EngineDead, Request
from autotune.testing._fake_boot import Boot
from autotune.testing._fake_log import ENGINE_DEAD, VERSION, Out
from autotune.testing._fake_model import ModelInfo, ServeConfig
from autotune.testing._fake_prefix import block_hashes, prompt_keys
from autotune.testing._fake_prompt import PromptError, image_tokens, prompt_parts

_METRICS = [  # name, type, snapshot key, help
    "num_requests_running gauge running Number of requests in model execution batches.",
    "num_requests_waiting gauge waiting Number of requests waiting to be processed.",
    "kv_cache_usage_perc gauge kv_usage KV-cache usage. 1 means 100 percent usage.",
    "num_preemptions counter preemptions Cumulative number of preemption from the engine.",
    "prompt_tokens counter prompt Number of prefill tokens processed.",
    "generation_tokens counter generation Number of generation tokens processed.",
    "prefix_cache_queries counter prefix_queries Prefix cache queries, in terms of number of "
    "queried tokens.",
    "prefix_cache_hits counter prefix_hits Prefix cache hits, in terms of number of cached tokens.",
]


class App(Protocol):
    """What the HTTP side reads from the server (``fake_engine.FakeServer``)."""

    ns: argparse.Namespace
    out: Out
    names: list[str]
    access_log: bool
    engine: BatchEngine | None
    cfg: ServeConfig | None
    model: ModelInfo | None
    boot: Boot
    crashed: threading.Event


class FakeHTTPServer(ThreadingHTTPServer):
    """Threaded server, bound first and activated once the engine is up."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, app: App, host: str, port: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        super().__init__((host, port), _Handler, bind_and_activate=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client that hung up is not an error
            super().handle_error(request, client_address)

    def server_bind(self) -> None:  # skip HTTPServer's slow getfqdn()
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


def metrics(app: App) -> str:
    """Prometheus text for the ``vllm:`` metrics a tuner reads."""
    snap = app.engine.snapshot() if app.engine else {}
    labels = f'engine="0",model_name="{app.names[0]}"'
    lines = []
    for row in _METRICS:
        name, kind, key, text = row.split(" ", 3)
        suffix = "_total" if kind == "counter" else ""
        sample = f"vllm:{name}{suffix}{{{labels}}} {float(snap.get(key, 0))}"
        lines += [f"# HELP vllm:{name} {text}", f"# TYPE vllm:{name} {kind}", sample]
    lines += [
        "# HELP vllm:request_success Count of successfully processed requests.",
        "# TYPE vllm:request_success counter",
    ]
    for reason in ("stop", "length", "abort"):
        value = float(snap.get(reason, 0))
        reason_labels = f'{labels},finished_reason="{reason}"'
        lines.append(f"vllm:request_success_total{{{reason_labels}}} {value}")
    cfg, ns = app.cfg, app.ns
    info = {
        "block_size": ns.block_size,
        "cache_dtype": ns.kv_cache_dtype,
        "enable_prefix_caching": ns.enable_prefix_caching is not False,
        "gpu_memory_utilization": ns.gpu_memory_utilization,
        "kv_cache_memory_bytes": ns.kv_cache_memory_bytes,
        "num_gpu_blocks": app.boot.num_blocks,
        "kv_cache_size_tokens": app.boot.num_blocks * ns.block_size,
        "max_model_len": app.boot.max_model_len or (cfg.max_model_len if cfg else None),
    }
    info_labels = ",".join(f'{k}="{v}"' for k, v in info.items())
    lines += [
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
        "# TYPE vllm:cache_config_info gauge",
    ]
    lines.append(f"vllm:cache_config_info{{{info_labels},{labels}}} 1.0")
    return "\n".join(lines) + "\n"


def _usage(prompt: int, produced: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": produced,
        "total_tokens": prompt + produced,
    }


class _Handler(BaseHTTPRequestHandler):
    """OpenAI-compatible routes served from the batch simulation."""

    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "uvicorn"

    @property
    def app(self) -> App:
        return cast(FakeHTTPServer, self.server).app

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.app.access_log:
            phrase = HTTPStatus(int(code)).phrase if str(code).isdigit() else ""
            host, port = self.client_address[:2]
            self.app.out.raw(
                self.app.out.api, f'INFO:     {host}:{port} - "{self.requestline}" {code} {phrase}'
            )

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, payload: Any, ctype: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code: int, message: str, kind: str, param: str | None = None) -> None:
        self._send(
            code, {"error": {"message": message, "type": kind, "param": param, "code": code}}
        )

    def do_GET(self) -> None:
        app, path = self.app, self.path.split("?")[0]
        dead = app.crashed.is_set() or (app.engine is not None and app.engine.dead)
        if path == "/health":
            self._send(503 if dead else 200, b"")
        elif path == "/version":
            self._send(200, {"version": VERSION})
        elif path == "/v1/models":
            length = app.boot.max_model_len
            card = {"object": "model", "owned_by": "vllm", "root": app.ns.model_tag}
            card["max_model_len"] = length
            self._send(200, {"object": "list", "data": [{"id": n, **card} for n in app.names]})
        elif path == "/metrics":
            self._send(200, metrics(app).encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/load":
            self._send(200, {"server_load": app.engine.snapshot()["running"] if app.engine else 0})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        key = self.app.ns.api_key
        if path not in ("/v1/completions", "/v1/chat/completions"):
            self._send(404, {"detail": "Not Found"})
        elif key and self.headers.get("authorization") != f"Bearer {key}":
            self._send(401, {"error": "Unauthorized"})
        else:
            chat = path.endswith("chat/completions")
            try:
                request = json.loads(body or b"{}")
                tokens, images = prompt_parts(request, chat)
                raw = request.get("max_tokens", request.get("max_completion_tokens"))
                max_tokens = None if raw is None else int(raw)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                self._error(400, f"Invalid request: {exc!r}", "BadRequestError")
                return
            self._generate(request, tokens, images, max_tokens, chat)

    def _generate(
        self, body: dict[str, Any], text: int, images: list[str], max_tokens: int | None, chat: bool
    ) -> None:
        app = self.app
        model, length = body.get("model") or app.names[0], app.boot.max_model_len
        if model not in app.names:
            return self._error(
                404, f"The model `{model}` does not exist.", "NotFoundError", "model"
            )
        try:
            limit = app.cfg.image_limit if app.cfg else 999
            prompt = text + image_tokens(images, app.model, limit, app.names[0])
        except PromptError as exc:
            return self._error(exc.code, exc.message, exc.kind, exc.param)
        if prompt >= length:
            msg = (
                f"This model's maximum context length is {length} tokens. However, your prompt "
                f"contains at least {prompt} input tokens, which exceeds this limit even without "
                "any output tokens. Please reduce the length of the input prompt. "
                f"(parameter=input_tokens, value={prompt})"
            )
            return self._error(400, msg, "BadRequestError", "input_tokens")
        if max_tokens is not None and max_tokens < 1:
            msg = f"max_tokens must be at least 1, got {max_tokens}."
            return self._error(400, msg, "BadRequestError", "max_tokens")
        limit_tokens = min(max_tokens or length, length - max(prompt, 1))
        seed = body.get("seed", json.dumps(body.get("messages" if chat else "prompt")))
        target = random.Random(f"{seed}").randint(1, limit_tokens)
        target = limit_tokens if body.get("ignore_eos") else target
        assert app.engine is not None
        blocks = None  # vLLM's default: prefix caching on unless --no-enable-prefix-caching
        if app.ns.enable_prefix_caching is not False:
            each = (app.model.image_tokens or 0) if app.model else 0
            blocks = block_hashes(prompt_keys(body, chat, each), app.engine.block_size)
        try:
            req = app.engine.submit(max(prompt, 1), target, limit_tokens, blocks=blocks)
        except EngineDead:
            return self._error(500, ENGINE_DEAD.split(": ", 1)[1], "InternalServerError")
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        kind = "chat.completion" if chat else "text_completion"
        head = {"id": rid, "object": kind, "created": int(time.time()), "model": model}
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self._stream(req, head, prompt, chat, usage)
        produced, item = 0, req.out.get()
        while isinstance(item, int):
            produced, item = produced + 1, req.out.get()
        if item is None:
            return self._error(500, ENGINE_DEAD.split(": ", 1)[1], "InternalServerError")
        out = " tok" * produced
        choice: dict[str, Any] = {"index": 0, "finish_reason": item, "logprobs": None}
        choice.update({"message": {"role": "assistant", "content": out}} if chat else {"text": out})
        choice["stop_reason"] = None
        self._send(200, {**head, "choices": [choice], "usage": _usage(prompt, produced)})

    def _stream(
        self, req: Request, head: dict[str, Any], prompt: int, chat: bool, usage: bool
    ) -> None:
        head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}

        def send(data: Any) -> None:
            raw = f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()
            self.wfile.write(f"{len(raw):X}\r\n".encode() + raw + b"\r\n")
            self.wfile.flush()

        def chunk(text: str | None, finish: str | None = None) -> dict[str, Any]:
            body: dict[str, Any] = {"delta": {} if text is None else {"content": text}}
            body = body if chat else {"text": text or "", "stop_reason": None}
            return {
                **head,
                "choices": [{"index": 0, **body, "logprobs": None, "finish_reason": finish}],
            }

        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        produced = 0
        try:
            if chat:
                first = chunk("")
                first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                send(first)
            item = req.out.get()
            while isinstance(item, int):
                produced += 1
                send(chunk(" tok"))
                item = req.out.get()
            if item is None:  # engine died: drop the connection mid-stream
                self.close_connection = True
                return
            send(chunk(None, item))
            if usage:
                send({**head, "choices": [], "usage": _usage(prompt, produced)})
            send("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            assert self.app.engine is not None
            self.app.engine.abort(req)
            self.close_connection = True
