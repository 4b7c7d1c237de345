"""The committed workload files under tests/data are what scripts/make_workload_data.py builds."""

from __future__ import annotations

import subprocess
import sys
from itertools import pairwise
from pathlib import Path

from autotune.load.sharegpt import read_exchanges
from autotune.load.workload import Workload, build_requests

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SHAREGPT = DATA / "sharegpt_small.json"
TRACE = DATA / "trace_small.jsonl"


def test_committed_files_are_what_the_script_builds(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "make_workload_data.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for committed in (SHAREGPT, TRACE):
        assert (tmp_path / committed.name).read_bytes() == committed.read_bytes(), committed.name


def test_sharegpt_file_loads_with_varied_lengths() -> None:
    exchanges = read_exchanges(SHAREGPT)
    assert 150 <= len(exchanges) < 200  # a few conversations have no reply and are skipped
    prompt_words = [len(e.prompt.split()) for e in exchanges]
    reply_words = [len(e.reply.split()) for e in exchanges]
    assert min(prompt_words) >= 20 and max(prompt_words) <= 400
    assert min(reply_words) >= 10 and max(reply_words) <= 300
    assert len(set(prompt_words)) > 50 and len(set(reply_words)) > 50
    wl = Workload(dataset=SHAREGPT)
    requests = build_requests(wl, num_prompts=len(exchanges), vocab_size=None)
    assert len({r.max_tokens for r in requests}) > 50


def test_trace_file_has_bursty_timestamps() -> None:
    requests = build_requests(Workload(dataset=TRACE), num_prompts=120, vocab_size=None)
    stamps = [r.timestamp for r in requests]
    assert all(isinstance(t, float) for t in stamps)
    times = [t for t in stamps if t is not None]
    assert times == sorted(times) and times[0] == 0.0 and 20 <= times[-1] <= 40
    gaps = sorted(b - a for a, b in pairwise(times))
    assert gaps[len(gaps) // 2] < 0.2 and gaps[-1] > 1.0  # mostly close, some idle gaps
    assert len({r.max_tokens for r in requests}) > 20
