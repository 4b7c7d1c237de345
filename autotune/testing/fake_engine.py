"""A fake engine that imitates ``vllm serve`` for tests and demos. It is a test double, not vLLM.

``python -m autotune.testing.fake_engine serve MODEL [flags]`` reads ``MODEL/config.json``, walks
simulated GPU memory phases (printing log lines and failure texts in vLLM's formats, so a log
classifier works on it), then serves an OpenAI-compatible API from a batch-scheduling simulation.
Knobs: ``AUTOTUNE_FAKE_*`` environment variables (see ``_fake_model.FakeEnv``). Vision models
(LLaVA-style configs) get vLLM's encoder profile at startup and image limits on requests.

This module is the entry point: startup orchestration, signals and cleanup. The parts live in
``_fake_cli`` (flags), ``_fake_model`` (config.json, knobs), ``_fake_boot`` (memory phases),
``_fake_batch`` (scheduling), ``_fake_log`` (console output) and ``_fake_http`` (the API).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from autotune.testing import fake_gpus
from autotune.testing._fake_batch import BatchEngine
from autotune.testing._fake_boot import CONTEXT_GIB, Boot, death_messages, plan_boot
from autotune.testing._fake_cli import ConfigError, build_parser, resolve_config
from autotune.testing._fake_http import FakeHTTPServer
from autotune.testing._fake_log import CORE_FAILED, VERSION, Out
from autotune.testing._fake_model import (
    FakeEnv,
    ModelError,
    ModelInfo,
    ServeConfig,
    resolve_model,
    speed_factor,
)

_CHILD = """
import os, signal, time
signal.signal(signal.SIGINT, signal.SIG_DFL)
parent, start = os.getppid(), time.monotonic()
on_orphan = os.environ.get("AUTOTUNE_FAKE_CHILD_EXIT_ON_ORPHAN") == "1"
while time.monotonic() - start < 900 and not (on_orphan and os.getppid() != parent):
    time.sleep(1)
"""


class _Stop(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT."""


class FakeServer:
    """One fake ``vllm serve`` process: startup phases, then HTTP until a signal or a crash."""

    def __init__(self, ns: argparse.Namespace, nondefault: dict[str, Any]) -> None:
        self.ns, self.nondefault, self.env = ns, nondefault, FakeEnv.from_environ(os.environ)
        self.out = Out()
        self.names: list[str] = ns.served_model_name or [ns.model_tag]
        quiet = ns.uvicorn_log_level not in ("info", "debug", "trace")
        self.access_log = not (ns.disable_uvicorn_access_log or quiet)
        self.httpd: FakeHTTPServer | None = None
        self.engine: BatchEngine | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.cfg: ServeConfig | None = None
        self.model: ModelInfo | None = None
        self.boot = Boot([])
        self.gpu_files: list[Path] = []
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
        self.httpd = FakeHTTPServer(self, ns.host, ns.port)
        try:
            self.httpd.server_bind()
        except OSError as exc:
            return self._fail(f"OSError: {exc}")
        try:
            self.model = model = resolve_model(ns.model_tag)
            self.cfg = cfg = resolve_config(ns, model, self.env.total)
        except ModelError as exc:
            return self._fail(str(exc))
        except ConfigError as exc:
            return self._fail(str(exc))
        if (too_few := fake_gpus.too_few(os.environ, cfg.tp)) is not None:
            return self._fail(too_few)
        self.child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.DEVNULL)
        out.engine = eng = f"EngineCore pid={self.child.pid}"
        init = f"Initializing a V1 LLM engine (v{VERSION}) with config: model='{ns.model_tag}'"
        out.log(eng, "INFO", "core.py:98", init)
        others = fake_gpus.others_gib(os.environ)  # engines on the same simulated GPU
        self.env = dataclasses.replace(self.env, used=self.env.used + others)
        self.boot = boot = plan_boot(cfg, model, self.env)
        if boot.phases and boot.phases[0].error is None:
            self.gpu_files = fake_gpus.hold(os.environ, cfg.util * self.env.total, devices=cfg.tp)
        for phase in boot.phases:
            time.sleep(phase.share * self.env.startup_s)
            for src, msg in phase.warnings:
                out.log(eng, "WARNING", src, msg)
            for src, msg in phase.lines:
                out.log(eng, "INFO", src, msg)
            for src, msg in phase.before_error:
                out.log(eng, "ERROR", src, msg)
            if phase.error:
                tb = out.traceback(phase.where, phase.error, phase.frames)
                out.log(eng, "ERROR", "core.py:1081", "EngineCore failed to start.\n" + tb)
                return self._fail(CORE_FAILED)
        out.log(eng, "INFO", "gpu_worker.py:460", boot.breakdown)
        took = sum(p.share for p in boot.phases) * self.env.startup_s
        took_msg = f"init engine (profile, create kv cache, warmup model) took {took:.2f} seconds"
        out.log(eng, "INFO", "core.py:271", took_msg)
        oom_util = self.env.load_oom_util
        self.engine = BatchEngine(
            max_num_seqs=cfg.max_num_seqs,
            max_num_batched_tokens=cfg.max_num_batched_tokens,
            capacity=boot.num_blocks * cfg.block_size,
            time_scale=self.env.time_scale / speed_factor(self.env.noise, random.Random()),
            crash_under_load=oom_util is not None and cfg.util >= oom_util,
            crash_after=self.env.crash_after,
            token_limit=self.env.token_limit(cfg.util, CONTEXT_GIB),
            step=self.env.step_seconds,
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
        out = self.out
        core, api = death_messages(self.env, self.cfg.util if self.cfg else 0.0, out)
        out.log(out.engine, "ERROR", "core.py:1120", core)
        out.log(out.api, "ERROR", "async_llm.py:540", api)
        self.crashed.set()

    def _cleanup(self) -> None:
        fake_gpus.free(self.gpu_files)
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
