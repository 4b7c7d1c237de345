"""The fake engine's ground truth, in-process: what a configuration gives without launching it.

For tuning benchmarks (``benchmarks/tuning_quality.py``): whether a configuration boots, with the
log lines the fake would print, and the throughput it would serve for a list of requests.
Nothing is modelled here: the fake's own pieces decide.

- flags → ``ServeConfig``: the fake's parser and ``resolve_config``;
- startup: ``plan_boot``, its phases rendered as the fake prints them, then autotune's own
  ``classify_startup`` / ``parse_startup`` on that text (what a real launch is judged by);
- requests: the HTTP handler's prompt accounting (``prompt_parts``, ``image_tokens``);
- serving: the fake's ``BatchEngine`` loop itself, on a virtual clock instead of ``time.sleep``,
  with requests fed as the scheduler can take them (the same schedule, no waiting);
- the benchmark's verdict: ``metrics.aggregate`` (``_landscape_bench``) and ``trial.verdict.judge``.

``landscape_runner.LandscapeRunner`` is a ``TrialRunner`` that returns this truth as a
``TrialResult``, so autotune's real study loop can run on it in milliseconds per trial.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.engine.launcher import ArgValue, vllm_flags
from autotune.engine.outcome import (
    Classified,
    Outcome,
    StartupInfo,
    classify_runtime,
    classify_startup,
    parse_startup,
)
from autotune.load.request import Request
from autotune.testing._fake_boot import CONTEXT_GIB, Boot, death_messages, plan_boot
from autotune.testing._fake_cli import ConfigError, build_parser, resolve_config
from autotune.testing._fake_log import CORE_FAILED, VERSION, Out
from autotune.testing._fake_model import FakeEnv, ModelInfo, ServeConfig
from autotune.testing._fake_prompt import PromptError, image_tokens, prompt_parts
from autotune.testing._landscape_bench import Alive, benchmark_of
from autotune.testing._truth_log import API, CORE, fail_text, fake_lines, raw_lines
from autotune.testing._virtual_serve import Job, Served, serve_jobs
from autotune.trial.result import TrialResult
from autotune.trial.verdict import judge

__all__ = ["FakeTruth", "Job", "Served", "serve_jobs"]


# --- one configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Startup:
    """A configuration's startup: the resolved settings and boot (None when the flags are
    rejected), the log the fake would print, and how autotune classifies it."""

    cfg: ServeConfig | None
    boot: Boot | None
    log: str
    failure: Classified | None  # None: the engine came up
    startup: StartupInfo
    startup_s: float


class FakeTruth:
    """The fake engine's answer for any configuration of one model, GPU and request list.

    ``env`` holds the ``AUTOTUNE_FAKE_*`` knobs, as a launched fake would read them.
    Results are cached per configuration (and simulations per distinct schedule).
    """

    def __init__(
        self,
        *,
        config: Mapping[str, Any],
        env: Mapping[str, str],
        requests: Sequence[Request],
        model_tag: str = "model",
    ) -> None:
        self.model = ModelInfo.from_config(config)
        self.env = FakeEnv.from_environ(env)
        self.requests = tuple(requests)
        self.model_tag = model_tag
        self._parser = build_parser()
        self._out = Out()
        self._startups: dict[tuple[tuple[str, ArgValue], ...], _Startup] = {}
        self._results: dict[tuple[tuple[str, ArgValue], ...], TrialResult] = {}
        self._prompts: dict[int, list[tuple[int, str | None]]] = {}
        self._served: dict[tuple[Any, ...], Served] = {}

    # startup

    def startup(self, args: Mapping[str, ArgValue]) -> _Startup:
        key = tuple(sorted(args.items()))
        if key not in self._startups:
            self._startups[key] = self._start(args)
        return self._startups[key]

    def _start(self, args: Mapping[str, ArgValue]) -> _Startup:
        log = fake_lines(API, "INFO", "api_server.py:1956", f"vLLM API server version {VERSION}")
        usage = io.StringIO()
        try:
            with contextlib.redirect_stderr(usage):
                ns = self._parser.parse_args([self.model_tag, *vllm_flags(args)])
        except SystemExit:  # argparse's usage error, as the fake prints it before exiting 2
            return self._judged(None, None, [*log, *usage.getvalue().splitlines()])
        try:
            cfg = resolve_config(ns, self.model, self.env.total)
        except ConfigError as exc:
            log += raw_lines(API, fail_text(str(exc)))
            return self._judged(None, None, log)
        init = f"Initializing a V1 LLM engine (v{VERSION}) with config: model='{self.model_tag}'"
        log += fake_lines(CORE, "INFO", "core.py:98", init)
        boot = plan_boot(cfg, self.model, self.env)
        for phase in boot.phases:  # printed as FakeServer._run prints them
            for level, pairs in (
                ("WARNING", phase.warnings),
                ("INFO", phase.lines),
                ("ERROR", phase.before_error),
            ):
                for src, msg in pairs:
                    log += fake_lines(CORE, level, src, msg)
            if phase.error:
                tb = self._out.traceback(phase.where, phase.error, phase.frames)
                log += fake_lines(
                    CORE, "ERROR", "core.py:1081", "EngineCore failed to start.\n" + tb
                )
                log += raw_lines(API, fail_text(CORE_FAILED))
                return self._judged(cfg, boot, log)
        log += fake_lines(CORE, "INFO", "gpu_worker.py:460", boot.breakdown)
        return self._judged(cfg, boot, log)

    def _judged(self, cfg: ServeConfig | None, boot: Boot | None, lines: list[str]) -> _Startup:
        log = "\n".join(lines) + "\n"
        up = boot is not None and not any(p.error for p in boot.phases)
        failure = None if up else classify_startup(log, returncode=1)
        took = sum(p.share for p in boot.phases) * self.env.startup_s if boot else 0.0
        return _Startup(cfg, boot, log, failure, parse_startup(log), took)

    # requests

    def _prompts_for(self, cfg: ServeConfig) -> list[tuple[int, str | None]]:
        """(prompt tokens, refusal) per request, as the fake's HTTP handler counts them."""
        limit = cfg.image_limit if self.model.is_vision else 999
        if limit not in self._prompts:
            rows: list[tuple[int, str | None]] = []
            for r in self.requests:
                chat = r.messages is not None
                body = {"messages": r.messages} if chat else {"prompt": r.prompt}
                text, images = prompt_parts(body, chat)
                try:
                    rows.append(
                        (text + image_tokens(images, self.model, limit, self.model_tag), None)
                    )
                except PromptError as exc:
                    rows.append((0, f"{exc.code} {exc.message}"))
            self._prompts[limit] = rows
        return self._prompts[limit]

    def jobs(self, cfg: ServeConfig, length: int) -> tuple[list[Job | str], int]:
        """Per request: the job the engine gets, or the error the client gets; and how many
        jobs. Follows ``_fake_http._generate`` (context length, ``max_tokens``, ``ignore_eos``)."""
        out: list[Job | str] = []
        for (prompt, refused), r in zip(self._prompts_for(cfg), self.requests, strict=True):
            if refused is not None:
                out.append(refused)
            elif prompt >= length:
                out.append(f"400 This model's maximum context length is {length} tokens.")
            elif r.max_tokens is not None and r.max_tokens < 1:
                out.append(f"400 max_tokens must be at least 1, got {r.max_tokens}.")
            else:
                limit_tokens = min(r.max_tokens or length, length - max(prompt, 1))
                if not r.ignore_eos:
                    raise ValueError("landscapes need ignore_eos requests (a fixed amount of work)")
                out.append((max(prompt, 1), limit_tokens, limit_tokens))
        return out, sum(1 for j in out if not isinstance(j, str))

    # serving

    def serve(self, jobs: Sequence[Job], cfg: ServeConfig, capacity: int) -> Served:
        """``serve_jobs``, cached; settings past the point where they can bind are merged (a
        larger batch budget or KV cache than every running request can use changes nothing)."""
        env = self.env
        crash_under_load = env.load_oom_util is not None and cfg.util >= env.load_oom_util
        seqs = min(cfg.max_num_seqs, max(len(jobs), 1))
        longest = max((j[0] + j[2] for j in jobs), default=1)
        mbt = min(cfg.max_num_batched_tokens, seqs * (longest + 1))
        capacity = min(capacity, seqs * longest)
        limit = env.token_limit(cfg.util, CONTEXT_GIB)
        if limit is not None and limit >= capacity:
            limit = None  # the running batch's KV tokens (at most ``capacity``) never exceed it
        key = (tuple(jobs), seqs, mbt, capacity, crash_under_load, limit)
        if key not in self._served:
            self._served[key] = serve_jobs(
                jobs,
                max_num_seqs=seqs,
                max_num_batched_tokens=mbt,
                capacity=capacity,
                time_scale=env.time_scale,
                crash_under_load=crash_under_load,
                crash_after=env.crash_after,
                token_limit=limit,
                step=env.step_seconds,
            )
        return self._served[key]

    # the whole trial

    def result(self, args: Mapping[str, ArgValue], *, log_path: Path) -> TrialResult:
        """What ``TrialRunner.run`` would return for these arguments (cached)."""
        key = tuple(sorted(args.items()))
        if key not in self._results:
            self._results[key] = self._result(dict(args), log_path)
        return self._results[key]

    def throughput(self, args: Mapping[str, ArgValue]) -> float:
        """Output tokens per second if the configuration serves; 0.0 if it does not."""
        result = self.result(args, log_path=Path("-"))
        return result.throughput if result.outcome is Outcome.OK else 0.0

    def _result(self, args: dict[str, ArgValue], log_path: Path) -> TrialResult:
        st = self.startup(args)
        if st.failure is not None or st.cfg is None or st.boot is None:
            failure = st.failure or Classified(Outcome.STARTUP_CRASH, "no boot")
            return TrialResult(
                outcome=failure.outcome,
                reason=failure.reason,
                args=args,
                log_path=log_path,
                startup=st.startup,
                estimated_max_model_len=failure.estimated_max_model_len,
                vllm_version=st.startup.vllm_version,
            )
        cfg, boot = st.cfg, st.boot
        planned, _ = self.jobs(cfg, boot.max_model_len)
        jobs = [j for j in planned if not isinstance(j, str)]
        capacity = boot.num_blocks * cfg.block_size
        served = self.serve(jobs, cfg, capacity)
        bench = benchmark_of(planned, served)
        if served.crashed is not None:
            verdict = classify_runtime(st.log + self._death_log(cfg))
        else:
            verdict = judge(bench, Alive())
        return TrialResult(
            outcome=verdict.outcome,
            reason=verdict.reason,
            args=args,
            log_path=log_path,
            metrics=bench.metrics,
            startup=st.startup,
            vllm_version=VERSION,
            startup_s=st.startup_s,
            errors=bench.errors,
            preemptions=served.preemptions,
            peak_kv_cache_usage_pct=round(100 * served.peak_kv_tokens / capacity, 1),
            peak_requests_waiting=served.peak_waiting,
            peak_requests_running=served.peak_running,
        )

    def _death_log(self, cfg: ServeConfig) -> str:
        """The lines ``FakeServer._on_death`` prints when the engine dies under load."""
        core, api = death_messages(self.env, cfg.util, self._out)
        lines = fake_lines(CORE, "ERROR", "core.py:1120", core)
        lines += fake_lines(API, "ERROR", "async_llm.py:540", api)
        return "\n".join(lines) + "\n"
