"""A shared profile cannot inject flags or out-of-range values; secrets are never written;
concurrent writers never corrupt the store."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune.engine.safety import redact, split_extra, strip_secrets
from autotune.errors import UserError
from autotune.profiles.store import ProfileStore
from tests.profiles.test_store import make


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("vllm_args", {"trust_remote_code": True}, "not a flag autotune tunes"),
        ("vllm_args", {"gpu_memory_utilization": 1.5}, "outside vLLM's limits"),
        ("vllm_args", {"max_num_seqs": 0}, "outside vLLM's limits"),
        ("vllm_args", {"max_num_seqs": "64; rm -rf /"}, "outside vLLM's limits"),
        ("vllm_args", {"limit_mm_per_prompt": "image=2"}, "must be JSON"),
        ("extra_args", ["--trust-remote-code"], "may not carry"),
        ("extra_args", ["--model=/evil"], "may not carry"),
    ],
)
def test_tampered_profile_is_rejected_with_the_file_name(
    tmp_path: Path, field: str, value: Any, message: str
) -> None:
    data = make("2026-01-01").to_dict()
    data[field] = value
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=message) as err:
        ProfileStore.load(path)
    assert str(path) in str(err.value)


def test_secrets_never_written(tmp_path: Path) -> None:
    from dataclasses import replace

    profile = replace(
        make("2026-01-01"),
        extra_args=["--enforce-eager", "--api-key", "sk-123", "--hf-token=hf_abc"],
    )
    path = ProfileStore(tmp_path).save(profile)
    text = path.read_text()
    assert "sk-123" not in text and "hf_abc" not in text and "--enforce-eager" in text
    assert strip_secrets(["--api-key", "x", "--dtype", "bfloat16"]) == ["--dtype", "bfloat16"]
    assert redact(["vllm", "--api-key", "x", "--hf-token=y", "--seed", "1"]) == [
        "vllm", "--api-key", "***", "--hf-token=***", "--seed", "1",
    ]  # fmt: skip
    kept, dropped = split_extra(["--enforce-eager", "--trust-remote-code", "--dtype", "bfloat16",
                                 "--chat-template", "t.jinja"])  # fmt: skip
    assert kept == ["--enforce-eager", "--dtype", "bfloat16"]
    assert dropped == ["--trust-remote-code", "--chat-template", "t.jinja"]


def _writer(root: str, n: int) -> None:
    from dataclasses import replace

    store = ProfileStore(Path(root))
    for i in range(20):
        p = make(f"2026-01-01T00:00:{i:02d}+00:00", max_num_seqs=n * 100 + i + 1)
        store.save(replace(p, metrics={"output_throughput": float(n), "pad": "x" * 20000}))


@pytest.mark.slow
def test_eight_concurrent_writers(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), n)) for n in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    files = list(tmp_path.rglob("*.yaml"))
    assert len(files) == 1 and not list(tmp_path.rglob(".tmp-*"))
    profile = ProfileStore.load(files[0])  # parses and validates: not interleaved
    writer = int(profile.metrics["output_throughput"])
    assert profile.vllm_args["max_num_seqs"] // 100 == writer


def test_parallel_sizes_from_extra_args() -> None:
    from autotune.engine.safety import parallel_sizes

    assert parallel_sizes(["--enforce-eager"]) == {}
    got = parallel_sizes(["-tp", "2", "--pipeline-parallel-size=3", "--tensor-parallel-size", "4"])
    assert got == {"tensor_parallel_size": 4, "pipeline_parallel_size": 3}
    with pytest.raises(UserError, match="-tp two: expected an integer"):
        parallel_sizes(["-tp", "two"])


def test_secret_flags_are_whole_words() -> None:
    args = ["--max-num-batched-tokens", "8192", "--ssl-keyfile", "k.pem", "--tokenizer", "t"]
    assert strip_secrets(args) == args and redact(args) == args
    assert strip_secrets(["--hf_token", "x", "--api-key=y", "--seed", "1"]) == ["--seed", "1"]


def test_listen_flags_are_dropped_from_trials_and_passwords_from_urls() -> None:
    from autotune.engine.safety import redact_url, without_listen_args

    args = ["--host", "0.0.0.0", "--port=8000", "--enforce-eager", "--uds", "/s"]
    assert without_listen_args(args) == ["--enforce-eager"]
    url = "postgresql://autotune:s3cret@db:5432/studies"
    assert redact_url(url) == "postgresql://autotune:***@db:5432/studies"
    assert redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
