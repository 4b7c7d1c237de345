"""The fake engine's ground truth for tests, without a launch: its own flag parser, defaults and
memory phases (``plan_boot``), and the log lines it would print."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autotune.engine.launcher import vllm_flags
from autotune.engine.outcome import classify_startup, parse_startup
from autotune.testing._fake_boot import Boot, plan_boot
from autotune.testing._fake_cli import build_parser, resolve_config
from autotune.testing._fake_model import FakeEnv, ModelInfo

_PARSER = build_parser()


def fake_boot(
    args: Mapping[str, Any], *, config: Mapping[str, Any], env: Mapping[str, str]
) -> Boot:
    """What the fake's memory model does with these vLLM arguments."""
    model, fake = ModelInfo.from_config(config), FakeEnv.from_environ(env)
    ns = _PARSER.parse_args(["model", *vllm_flags(dict(args))])
    return plan_boot(resolve_config(ns, model, fake.total), model, fake)


def boots(args: Mapping[str, Any], *, config: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    return not any(p.error for p in fake_boot(args, config=config, env=env).phases)


def fake_log(boot: Boot) -> str:
    """The engine lines the fake prints for ``boot`` (what ``parse_startup`` reads)."""
    lines = []
    for phase in boot.phases:
        for level, pairs in (("WARNING", phase.warnings), ("INFO", phase.lines),
                             ("ERROR", phase.before_error)):  # fmt: skip
            lines += [f"(EngineCore pid=2) {level} 01-01 00:00:00 [{s}] {m}" for s, m in pairs]
        if phase.error:
            return "\n".join([*lines, phase.error]) + "\n"
    return "\n".join([*lines, boot.breakdown]) + "\n"


def launched_attrs(
    args: Mapping[str, Any], *, config: Mapping[str, Any], env: Mapping[str, str]
) -> dict[str, Any]:
    """The user attributes a launched trial with these arguments would store."""
    boot = fake_boot(args, config=config, env=env)
    log = fake_log(boot)
    failed = any(p.error for p in boot.phases)
    verdict = classify_startup(log, returncode=1) if failed else None
    return {
        "launched": True,
        "outcome": verdict.outcome.value if verdict else "ok",
        "vllm_args": dict(args),
        "startup": parse_startup(log).to_dict(),
        "estimated_max_model_len": verdict.estimated_max_model_len if verdict else None,
    }
