"""A fake engine that imitates ``vllm serve`` for tests and demos. It is a test double, not vLLM.

``python -m autotune.testing.fake_engine serve MODEL [flags]`` reads ``MODEL/config.json``, walks
simulated GPU memory phases (printing log lines and failure texts in vLLM's formats, so a log
classifier works on it), then serves an OpenAI-compatible API from a batch-scheduling simulation.
Knobs: ``AUTOTUNE_FAKE_*`` environment variables (see ``_fake_sim.FakeEnv``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, cast

from autotune.testing._fake_sim import (
    CONTEXT_GIB,
    BatchEngine,
    Boot,
    EngineDead,
    FakeEnv,
    ModelError,
    ModelInfo,
    Request,
    ServeConfig,
    oom_text,
    plan_boot,
    resolve_model,
)

VERSION = "0.33.0+fake"
_DEAD = (
    "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. "
    "See stack trace (above) for the root cause."
)
_WRAPPER = (
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"
)
_CHILD = """
import os, signal, time
signal.signal(signal.SIGINT, signal.SIG_DFL)
parent, start = os.getppid(), time.monotonic()
on_orphan = os.environ.get("AUTOTUNE_FAKE_CHILD_EXIT_ON_ORPHAN") == "1"
while time.monotonic() - start < 900 and not (on_orphan and os.getppid() != parent):
    time.sleep(1)
"""
_METRICS = [  # name, type, snapshot key, help
    "num_requests_running gauge running Number of requests in model execution batches.",
    "num_requests_waiting gauge waiting Number of requests waiting to be processed.",
    "kv_cache_usage_perc gauge kv_usage KV-cache usage. 1 means 100 percent usage.",
    "num_preemptions counter preemptions Cumulative number of preemption from the engine.",
    "prompt_tokens counter prompt Number of prefill tokens processed.",
    "generation_tokens counter generation Number of generation tokens processed.",
]
_RUNNER = "v1/worker/gpu_model_runner.py"
_FRAMES = {  # phase -> innermost frame (file, function)
    "init_device": ("v1/worker/utils.py", "request_memory"),
    "load_model": (_RUNNER, "load_model"),
    "profile_run": (_RUNNER, "profile_run"),
    "profile_cudagraph_memory": (_RUNNER, "profile_cudagraph_memory"),
    "_initialize_kv_caches": ("v1/core/kv_cache_planning.py", "_check_enough_kv_cache_memory"),
    "initialize_kv_cache": (_RUNNER, "initialize_kv_cache"),
    "capture_model": (_RUNNER, "capture_model"),
    "step": (_RUNNER, "execute_model"),
}


class _Stop(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT."""


class _ConfigError(Exception):
    """A P0 configuration error; the message is the pydantic-style text."""


def _human_int(value: str) -> int:
    units = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([kmgKMG]?)\s*", value)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid int value: {value!r}")
    return int(float(match[1]) * units[match[2]])


def _model_len(value: str) -> int:
    return -1 if value == "auto" else _human_int(value)


def _json_arg(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"Value {value} cannot be converted to {json.loads}."
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``serve`` flags, named like ``vllm serve``'s."""
    p = argparse.ArgumentParser(
        prog="vllm serve",
        usage="vllm serve [model_tag] [options]",
        description="A fake engine that imitates `vllm serve` (autotune's test double).",
    )
    add = p.add_argument
    add("model_tag")
    add("--host", default="0.0.0.0")
    add("--port", type=int, default=8000)
    add("--gpu-memory-utilization", type=float, default=0.92)
    add("--max-num-seqs", type=int)
    add("--max-model-len", type=_model_len)
    add("--max-num-batched-tokens", type=_human_int)
    add("--dtype", default="auto")
    add("--kv-cache-dtype", default="auto")
    add("--kv-cache-memory-bytes", type=_human_int)
    add("--block-size", type=int, default=16)
    add("--enforce-eager", action="store_true")
    add("--tensor-parallel-size", "-tp", type=int, default=1)
    add("--served-model-name", nargs="+")
    add("--seed", type=int)
    add("--trust-remote-code", action="store_true")
    add("--enable-prefix-caching", action=argparse.BooleanOptionalAction)
    add("--enable-chunked-prefill", action=argparse.BooleanOptionalAction)
    add("--limit-mm-per-prompt", type=_json_arg)
    add("--load-format", default="auto")
    add("--api-key")
    add("--uvicorn-log-level", default="info")
    add("--disable-uvicorn-access-log", action="store_true")
    add("--max-log-len", type=int)
    add("--generation-config", default="auto")
    return p


def _pydantic(cls: str, errors: list[tuple[str, str, str, str]]) -> str:
    """Format (field, message, type, input) tuples like pydantic's ValidationError."""
    n = len(errors)
    lines = [f"pydantic_core._pydantic_core.ValidationError: {n} validation error"]
    lines[0] += f"{'s' if n > 1 else ''} for {cls}"
    for loc, msg, kind, given in errors:
        lines += [loc] if loc else []
        lines.append(f"  {msg} [type={kind}, {given}]")
        lines.append(f"    For further information visit https://errors.pydantic.dev/2.12/v/{kind}")
    return "\n".join(lines)


def resolve_config(ns: argparse.Namespace, m: ModelInfo, total_gib: float) -> ServeConfig:
    """Apply ``vllm serve`` defaults and its P0 checks; raise ``_ConfigError`` on bad values."""
    length = ns.max_model_len
    allow_long = os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "").lower() in ("1", "true")
    if length is not None and length > m.max_len and not allow_long:
        msg = (
            f"Value error, User-specified max_model_len ({length}) is greater than the derived "
            f"max_model_len (max_position_embeddings={float(m.max_len)} or model_max_length=None "
            "in model's config.json). To allow overriding this maximum, set the env var "
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with "
            "extreme caution. If the model uses relative position encoding (RoPE), positions "
            "exceeding derived_max_model_len lead to nan. If the model uses absolute position "
            "encoding, positions exceeding derived_max_model_len will cause a CUDA array "
            "out-of-bounds error."
        )
        given = f"input_value=ArgsKwargs((), {{'max_model_len': {length}}}), input_type=ArgsKwargs"
        raise _ConfigError(_pydantic("ModelConfig", [("", msg, "value_error", given)]))
    util = ns.gpu_memory_utilization
    if not 0 < util <= 1:
        kind, msg = ("greater_than", "greater than 0") if util <= 0 else ("less_than_equal", "")
        msg = msg or "less than or equal to 1"
        given = f"input_value={util}, input_type=float"
        raise _ConfigError(
            _pydantic(
                "CacheConfig", [("gpu_memory_utilization", f"Input should be {msg}", kind, given)]
            )
        )
    eff_len = length if length is not None and length > 0 else m.max_len
    tokens_d, seqs_d = (16384, 1024) if total_gib >= 160 else (8192, 1024)
    tokens_d, seqs_d = (tokens_d, seqs_d) if total_gib >= 70 else (2048, 256)
    chunked = ns.enable_chunked_prefill is not False
    mbt, seqs = ns.max_num_batched_tokens, ns.max_num_seqs
    if mbt is None:
        mbt = tokens_d if chunked else max(eff_len, tokens_d)
        mbt = min((seqs_d if seqs is None else seqs) * eff_len, mbt)
    if seqs is None:
        seqs = min(seqs_d, mbt)
    ge1 = [(n, v) for n, v in (("max_num_batched_tokens", mbt), ("max_num_seqs", seqs)) if v < 1]
    errors = [
        (
            n,
            "Input should be greater than or equal to 1",
            "greater_than_equal",
            f"input_value={v}, input_type=int",
        )
        for n, v in ge1
    ]
    given = f"'max_num_batched_tokens': {mbt}, 'max_num_seqs': {seqs}, 'max_model_len': {eff_len}"
    given = f"input_value=ArgsKwargs((), {{{given}}}), input_type=ArgsKwargs"
    if not errors and mbt < seqs:
        msg = f"max_num_batched_tokens ({mbt}) must be greater than or equal to max_num_seqs"
        errors.append(("", f"Value error, {msg} ({seqs}).", "value_error", given))
    elif not errors and not chunked and mbt < eff_len:
        msg = (
            f"Value error, max_num_batched_tokens ({mbt}) is smaller than max_model_len "
            f"({eff_len}). This effectively limits the maximum sequence length to "
            "max_num_batched_tokens and makes vLLM reject longer sequences. Please increase "
            "max_num_batched_tokens or decrease max_model_len."
        )
        errors.append(("", msg, "value_error", given))
    if errors:
        raise _ConfigError(_pydantic("SchedulerConfig", errors))
    return ServeConfig(
        util=util,
        max_num_seqs=seqs,
        max_num_batched_tokens=mbt,
        max_model_len=-1 if length is not None and length <= 0 else eff_len,
        block_size=ns.block_size,
        enforce_eager=ns.enforce_eager,
        tp=ns.tensor_parallel_size,
        dtype=ns.dtype,
        kv_cache_dtype=ns.kv_cache_dtype,
        kv_cache_memory_bytes=ns.kv_cache_memory_bytes,
    )


class _Out:
    """Writes log lines in vLLM's format; one lock keeps concurrent lines whole."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.api = f"APIServer pid={os.getpid()}"
        self.engine = self.api

    def raw(self, proc: str, text: str, err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout
        with self.lock:
            try:
                stream.write("".join(f"({proc}) {line}\n" for line in text.splitlines()))
                stream.flush()
            except (OSError, ValueError):
                pass

    def log(self, proc: str, level: str, src: str, msg: str) -> None:
        stamp = time.strftime("%m-%d %H:%M:%S")
        lines = "\n".join(f"{level} {stamp} [{src}] {line}" for line in msg.splitlines())
        self.raw(proc, lines, err=level == "ERROR")

    def traceback(self, where: str, exc: str) -> str:
        """A Python-style traceback through the engine core down to the failing phase."""
        outer = (
            ("run_busy_loop", "step") if where == "step" else ("__init__", "_initialize_kv_caches")
        )
        frames = [
            ("v1/engine/core.py", "run_engine_core"),
            *(("v1/engine/core.py", f) for f in outer),
        ]
        frames.append(_FRAMES.get(where, ("v1/engine/core.py", where)))
        body = "".join(f'  File "/fake/vllm/{f}", line 312, in {fn}\n' for f, fn in frames)
        return f"Traceback (most recent call last):\n{body}{exc}"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, app: FakeServer, host: str, port: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        super().__init__((host, port), _Handler, bind_and_activate=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client that hung up is not an error
            super().handle_error(request, client_address)

    def server_bind(self) -> None:  # skip HTTPServer's slow getfqdn()
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class FakeServer:
    """One fake ``vllm serve`` process: startup phases, then HTTP until a signal or a crash."""

    def __init__(self, ns: argparse.Namespace, nondefault: dict[str, Any]) -> None:
        self.ns, self.nondefault, self.env = ns, nondefault, FakeEnv.from_environ(os.environ)
        self.out = _Out()
        self.names: list[str] = ns.served_model_name or [ns.model_tag]
        quiet = ns.uvicorn_log_level not in ("info", "debug", "trace")
        self.access_log = not (ns.disable_uvicorn_access_log or quiet)
        self.httpd: _HTTPServer | None = None
        self.engine: BatchEngine | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.cfg: ServeConfig | None = None
        self.boot = Boot([])
        self.crashed = threading.Event()
        self.serving = self.stopping = False

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            raise _Stop

    def run(self) -> int:
        """Run to completion and return the exit code."""
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        try:
            return self._run()
        except _Stop:
            self.out.log(self.out.api, "INFO", "launcher.py:110", "Shutting down HTTP server.")
            return 0
        finally:
            self.stopping = True
            self._cleanup()

    def _fail(self, exc: str) -> int:
        tb = "Traceback (most recent call last):\n"
        tb += '  File "/fake/bin/vllm", line 10, in <module>\n    sys.exit(main())\n'
        self.out.raw(self.out.api, tb + exc, err=True)
        return 1

    def _run(self) -> int:
        out, ns, api = self.out, self.ns, self.out.api
        out.log(api, "INFO", "api_server.py:1956", f"vLLM API server version {VERSION}")
        out.log(api, "INFO", "utils.py:253", f"non-default args: {self.nondefault}")
        self.httpd = _HTTPServer(self, ns.host, ns.port)
        try:
            self.httpd.server_bind()
        except OSError as exc:
            return self._fail(f"OSError: {exc}")
        try:
            model = resolve_model(ns.model_tag)
            self.cfg = cfg = resolve_config(ns, model, self.env.total)
        except ModelError as exc:
            return self._fail(str(exc))
        except _ConfigError as exc:
            return self._fail(str(exc))
        self.child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.DEVNULL)
        out.engine = eng = f"EngineCore pid={self.child.pid}"
        init = f"Initializing a V1 LLM engine (v{VERSION}) with config: model='{ns.model_tag}'"
        out.log(eng, "INFO", "core.py:98", init)
        self.boot = boot = plan_boot(cfg, model, self.env)
        for phase in boot.phases:
            time.sleep(phase.share * self.env.startup_s)
            for src, msg in phase.lines:
                out.log(eng, "INFO", src, msg)
            for src, msg in phase.before_error:
                out.log(eng, "ERROR", src, msg)
            if phase.error:
                tb = out.traceback(phase.where, phase.error)
                out.log(eng, "ERROR", "core.py:1081", "EngineCore failed to start.\n" + tb)
                return self._fail(_WRAPPER)
        out.log(eng, "INFO", "gpu_worker.py:460", boot.breakdown)
        took = sum(p.share for p in boot.phases) * self.env.startup_s
        took_msg = f"init engine (profile, create kv cache, warmup model) took {took:.2f} seconds"
        out.log(eng, "INFO", "core.py:271", took_msg)
        oom_util = self.env.load_oom_util
        self.engine = BatchEngine(
            max_num_seqs=cfg.max_num_seqs,
            max_num_batched_tokens=cfg.max_num_batched_tokens,
            capacity=boot.num_blocks * cfg.block_size,
            time_scale=self.env.time_scale,
            crash_under_load=oom_util is not None and cfg.util >= oom_util,
            crash_after=self.env.crash_after,
            on_death=self._on_death,
        )
        self.engine.start()
        time.sleep(0.05 * self.env.startup_s)
        url = f"http://{ns.host}:{ns.port}"
        out.log(api, "INFO", "api_server.py:1890", f"Starting vLLM server on {url}")
        try:
            self.httpd.server_activate()
        except OSError as exc:
            return self._fail(f"OSError: {exc}")
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.serving = True
        started = [f"Started server process [{os.getpid()}]", "Waiting for application startup."]
        out.raw(
            api, "".join(f"INFO:     {x}\n" for x in [*started, "Application startup complete."])
        )
        while not self.crashed.wait(0.1):
            pass
        time.sleep(0.5)
        return 1

    def _on_death(self, reason: str) -> None:
        env, cfg = self.env, self.cfg
        left = env.total - env.used - CONTEXT_GIB - (cfg.util * env.total if cfg else 0.0)
        exc = oom_text(max(left, 0.0) + 0.25, env.total, left, env.total - env.used - left)
        tb, out = self.out.traceback("step", exc), self.out
        out.log(out.engine, "ERROR", "core.py:1120", "EngineCore encountered a fatal error.\n" + tb)
        out.log(out.api, "ERROR", "async_llm.py:540", "AsyncLLM output_handler failed.\n" + _DEAD)
        self.crashed.set()

    def _cleanup(self) -> None:
        if self.engine:
            self.engine.stop()
        if self.httpd:
            if self.serving:
                self.httpd.shutdown()
            self.httpd.server_close()
        if self.child and self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(1)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()

    def metrics(self) -> str:
        """Prometheus text for the ``vllm:`` metrics a tuner reads."""
        snap = self.engine.snapshot() if self.engine else {}
        labels = f'engine="0",model_name="{self.names[0]}"'
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
        cfg, ns = self.cfg, self.ns
        info = {
            "block_size": ns.block_size,
            "cache_dtype": ns.kv_cache_dtype,
            "enable_prefix_caching": ns.enable_prefix_caching is not False,
            "gpu_memory_utilization": ns.gpu_memory_utilization,
            "kv_cache_memory_bytes": ns.kv_cache_memory_bytes,
            "num_gpu_blocks": self.boot.num_blocks,
            "kv_cache_size_tokens": self.boot.num_blocks * ns.block_size,
            "max_model_len": self.boot.max_model_len or (cfg.max_model_len if cfg else None),
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


def _prompt_tokens(body: dict[str, Any], chat: bool) -> tuple[int, int]:
    """(prompt tokens, images): words for text, list length for token ids, +4 per chat message."""
    if not chat:
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return len(prompt), 0
        texts = prompt if isinstance(prompt, list) else [prompt]
        return sum(len(str(t).split()) for t in texts), 0
    tokens = images = 0
    for message in body["messages"]:
        content = message.get("content") or ""
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts:
            if part.get("type") == "text":
                tokens += len(str(part.get("text", "")).split())
            elif part.get("type") in ("image_url", "image", "input_image"):
                images += 1
        tokens += 4
    return tokens, images


class _Handler(BaseHTTPRequestHandler):
    """OpenAI-compatible routes served from the batch simulation."""

    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "uvicorn"

    @property
    def app(self) -> FakeServer:
        return cast(_HTTPServer, self.server).app

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
            self._send(200, app.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
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
                tokens, images = _prompt_tokens(request, chat)
                raw = request.get("max_tokens", request.get("max_completion_tokens"))
                max_tokens = None if raw is None else int(raw)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                self._error(400, f"Invalid request: {exc!r}", "BadRequestError")
                return
            self._generate(request, tokens, images, max_tokens, chat)

    def _generate(
        self, body: dict[str, Any], prompt: int, images: int, max_tokens: int | None, chat: bool
    ) -> None:
        app = self.app
        model, length = body.get("model") or app.names[0], app.boot.max_model_len
        limits = app.ns.limit_mm_per_prompt
        limit = limits.get("image", 999) if isinstance(limits, dict) else 999
        limit = limit.get("count", 999) if isinstance(limit, dict) else int(limit)
        if model not in app.names:
            return self._error(
                404, f"The model `{model}` does not exist.", "NotFoundError", "model"
            )
        if images > limit:
            msg = f"At most {limit} image(s) may be provided in one prompt. (parameter=image)"
            return self._error(400, msg, "BadRequestError", "image")
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
        try:
            req = app.engine.submit(max(prompt, 1), target, limit_tokens)
        except EngineDead:
            return self._error(500, _DEAD.split(": ", 1)[1], "InternalServerError")
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
            return self._error(500, _DEAD.split(": ", 1)[1], "InternalServerError")
        text = " tok" * produced
        choice: dict[str, Any] = {"index": 0, "finish_reason": item, "logprobs": None}
        choice.update(
            {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        )
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


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``serve MODEL [flags]`` or ``--version``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["--version"], ["-v"]):
        print(VERSION)
        return 0
    parser = build_parser()
    if args[:1] != ["serve"]:
        print(
            "usage: vllm {serve} ...\nvllm: error: expected 'serve' or --version", file=sys.stderr
        )
        return 2
    ns = parser.parse_args(args[1:])
    nondefault = {"model_tag": ns.model_tag}
    nondefault.update({k: v for k, v in vars(ns).items() if v != parser.get_default(k)})
    return FakeServer(ns, nondefault).run()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # daemon handler threads may still hold stdout; skip interpreter teardown
