"""The log lines the fake engine would print, rendered in-process for ``FakeTruth``."""

from __future__ import annotations

API, CORE = "APIServer pid=1", "EngineCore pid=2"
_STAMP = "01-01 00:00:00"


def fake_lines(proc: str, level: str, src: str, msg: str) -> list[str]:
    return [f"({proc}) {level} {_STAMP} [{src}] {line}" for line in msg.splitlines()]


def raw_lines(proc: str, text: str) -> list[str]:
    return [f"({proc}) {line}" for line in text.splitlines()]


def fail_text(exc: str) -> str:
    tb = "Traceback (most recent call last):\n"
    return tb + '  File "/fake/bin/vllm", line 10, in <module>\n    sys.exit(main())\n' + exc
