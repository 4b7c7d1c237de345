"""The fake engine (a test double for ``vllm serve``), exercised as a real subprocess."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from autotune.testing._fake_batch import BatchEngine, Request
from autotune.testing._fake_boot import profiled_images, weights_gib
from autotune.testing._fake_model import FakeEnv, ModelInfo, ServeConfig

GIB = 1024**3
LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}
FAST = {"AUTOTUNE_FAKE_STARTUP_S": "0.2", "AUTOTUNE_FAKE_TIME_SCALE": "0.2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "llama-8b"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(LLAMA_8B))
    return path


class Fake:
    """One fake engine process with its combined log in a file."""

    def __init__(self, tmp: Path, model: str, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"fake-{self.port}.log"
        cmd = [sys.executable, "-m", "autotune.testing.fake_engine", "serve", model]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), *args]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **FAST, **(env or {})}
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.log}"
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"not ready:\n{self.log}")

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    fakes: list[Fake] = []

    def start(model: str | Path, *args: str, env: dict[str, str] | None = None) -> Fake:
        fakes.append(Fake(tmp_path, str(model), *args, env=env))
        return fakes[-1]

    yield start
    for fake in fakes:
        fake.stop()


def failed(fake: Fake) -> str:
    """Wait for a failing launch; return its log."""
    assert fake.wait() == 1, fake.log
    return fake.log


def expected_kv_tokens(util: float, max_num_seqs: int = 256, mbt: int = 2048) -> int:
    """The spec's memory model, computed independently of the implementation."""
    h, layers, heads, kv_heads, vocab = 4096, 32, 32, 8, 128256
    d = h // heads
    params = vocab * h * 2 + layers * (2 * h * heads * d + 2 * h * kv_heads * d + 3 * h * 14336)
    weights = params * 2 / GIB
    act = (mbt * h * 2 * 24 + max_num_seqs * vocab * 4 * 2) / GIB
    top = min(max_num_seqs * 2, 512, mbt)
    sizes = {s for s in [1, 2, 4, *range(8, 256, 8), *range(256, top + 1, 16)] if s <= top}
    sizes |= {s for s in (mbt, max_num_seqs) if s <= top}
    graphs = len(sizes) * (0.01 + weights * 0.002)
    kv = util * 24 - weights - act - graphs
    return math.floor(kv * GIB / (16 * 2 * layers * kv_heads * d * 2)) * 16


@pytest.mark.timeout(30)
def test_healthy_start_serves_openai_api(launch: Any, model: Path) -> None:
    fake = launch(model, "--max-model-len", "8192")
    fake.wait_ready()
    assert httpx.get(fake.url + "/version").json() == {"version": "0.33.0+fake"}
    card = httpx.get(fake.url + "/v1/models").json()["data"][0]
    assert (card["id"], card["root"], card["max_model_len"]) == (str(model), str(model), 8192)

    body = {
        "model": str(model),
        "prompt": "one two three four",
        "max_tokens": 7,
        "ignore_eos": True,
    }
    done = httpx.post(fake.url + "/v1/completions", json=body, timeout=10).json()
    assert done["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}
    assert done["choices"][0]["finish_reason"] == "length"

    chat = {
        "model": str(model),
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", fake.url + "/v1/chat/completions", json=chat, timeout=10) as resp:
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and chunks[-2]["choices"][0]["finish_reason"]
    assert usage["prompt_tokens"] == 2 + 4 and 1 <= usage["completion_tokens"] <= 5
    assert len(text.split()) == usage["completion_tokens"]

    plain = {"prompt": [1, 2, 3], "max_tokens": 2, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", fake.url + "/v1/completions", json=plain, timeout=10) as resp:
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    texts = [json.loads(e)["choices"][0]["text"] for e in events[:-1]]
    assert texts == [" tok", " tok", ""] and events[-1] == "[DONE]"

    tokens = expected_kv_tokens(0.92)
    assert f"GPU KV cache size: {tokens:,} tokens, Maximum concurrency for 8,192 tokens" in fake.log
    assert "Application startup complete." in fake.log
    metrics = httpx.get(fake.url + "/metrics").text
    samples = dict(
        re.findall(r"^(vllm:\w+)\{[^}]*\} ([\d.e+-]+)$", metrics, re.M)  # last sample per name
    )
    assert float(samples["vllm:generation_tokens_total"]) >= 7 + 1 + 2
    assert float(samples["vllm:prompt_tokens_total"]) == 4 + 6 + 3
    assert samples["vllm:num_requests_running"] == "0.0"
    assert f'num_gpu_blocks="{tokens // 16}"' in metrics


@pytest.mark.timeout(30)
def test_request_errors(launch: Any, model: Path) -> None:
    fake = launch(model, "--max-model-len", "64", "--served-model-name", "llama")
    fake.wait_ready()
    wrong = httpx.post(fake.url + "/v1/completions", json={"model": "nope", "prompt": "a"})
    assert wrong.status_code == 404
    assert wrong.json()["error"]["message"] == "The model `nope` does not exist."
    long = httpx.post(fake.url + "/v1/completions", json={"model": "llama", "prompt": "w " * 64})
    assert long.status_code == 400
    error = long.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400
    assert error["message"].startswith("This model's maximum context length is 64 tokens.")
    clamp = {"model": "llama", "prompt": "w " * 60, "max_tokens": 100, "ignore_eos": True}
    usage = httpx.post(fake.url + "/v1/completions", json=clamp, timeout=10).json()["usage"]
    assert usage["completion_tokens"] == 4
    ids = {"model": "llama", "prompt": list(range(10)), "max_tokens": 1}
    usage = httpx.post(fake.url + "/v1/completions", json=ids, timeout=10).json()["usage"]
    assert usage["prompt_tokens"] == 10


@pytest.mark.timeout(30)
def test_kv_cache_too_small_for_max_model_len(launch: Any, model: Path) -> None:
    log = failed(launch(model))  # default max_model_len 131072 needs 16 GiB of KV
    assert "Available KV cache memory: 4.4" in log
    match = re.search(
        r"To serve at least one request with the model's max seq len \(131072\), \(16\.0 GiB KV "
        r"cache is needed, which is larger than the available KV cache memory \(4\.\d GiB\)\. "
        r"Based on the available memory, the estimated maximum model length is (\d+)\.",
        log,
    )
    assert match, log
    assert int(match[1]) == expected_kv_tokens(0.92) - 16
    assert "Engine core initialization failed. See root cause above." in log


@pytest.mark.timeout(30)
def test_oom_during_profiling(launch: Any, model: Path) -> None:
    log = failed(launch(model, "--max-model-len", "8192", "--max-num-batched-tokens", "200000"))
    assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate" in log
    assert "Model loading took" in log
    assert "Available KV cache memory" not in log


@pytest.mark.timeout(30)
def test_oom_loading_weights(launch: Any, model: Path) -> None:
    log = failed(launch(model, env={"AUTOTUNE_FAKE_WEIGHTS_GIB": "30"}))
    assert "Failed to load model - not enough GPU memory." in log
    assert "torch.OutOfMemoryError: CUDA out of memory." in log
    assert "Model loading took" not in log


@pytest.mark.timeout(30)
def test_oom_during_graph_capture_near_full_utilization(launch: Any, model: Path) -> None:
    log = failed(launch(model, "--max-model-len", "8192", "--gpu-memory-utilization", "0.97"))
    assert "GPU KV cache size:" in log and "torch.OutOfMemoryError" in log
    assert "Graph capturing finished" not in log
    eager = launch(
        model, "--max-model-len", "8192", "--gpu-memory-utilization", "0.97", "--enforce-eager"
    )
    eager.wait_ready()
    assert "Estimated CUDA graph memory" not in eager.log


@pytest.mark.timeout(30)
def test_not_enough_free_memory_at_startup(launch: Any, model: Path) -> None:
    log = failed(launch(model, env={"AUTOTUNE_FAKE_GPU_USED_GIB": "10"}))
    assert (
        "ValueError: Free memory on device cuda:0 (13.50/24.00 GiB) on startup is less than "
        "desired GPU memory utilization (0.92, 22.08 GiB). Decrease GPU memory utilization or "
        "reduce GPU memory used by other processes."
    ) in log
    assert "Model loading took" not in log


@pytest.mark.timeout(30)
def test_no_memory_left_for_kv_cache(launch: Any, model: Path) -> None:
    log = failed(launch(model, "--max-model-len", "8192", "--gpu-memory-utilization", "0.6"))
    assert re.search(r"Available KV cache memory: -\d+\.\d\d GiB", log)
    assert "ValueError: No available memory for the cache blocks. Try increasing" in log


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("args", "text"),
    [
        (
            ["--gpu-memory-utilization", "1.5"],
            "1 validation error for CacheConfig\n(APIServer pid={pid}) gpu_memory_utilization\n"
            "(APIServer pid={pid})   Input should be less than or equal to 1 "
            "[type=less_than_equal, input_value=1.5, input_type=float]",
        ),
        (
            ["--max-num-seqs", "0"],
            "2 validation errors for SchedulerConfig\n(APIServer pid={pid}) max_num_batched_tokens",
        ),
        (
            ["--max-num-seqs", "64", "--max-num-batched-tokens", "32"],
            "max_num_batched_tokens (32) must be greater than or equal to max_num_seqs (64).",
        ),
        (
            ["--max-model-len", "200000"],
            "User-specified max_model_len (200000) is greater than the derived max_model_len "
            "(max_position_embeddings=131072.0 or model_max_length=None in model's config.json).",
        ),
    ],
)
def test_config_errors_exit_1_fast(launch: Any, model: Path, args: list[str], text: str) -> None:
    fake = launch(model, *args)
    log = failed(fake)
    assert "pydantic_core._pydantic_core.ValidationError: " in log
    assert text.format(pid=fake.proc.pid) in log
    assert "EngineCore" not in log


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--foo"], "vllm serve: error: unrecognized arguments: --foo"),
        (
            ["--limit-mm-per-prompt", "image=2"],
            "vllm serve: error: argument --limit-mm-per-prompt: Value image=2 cannot be converted "
            "to <function loads at 0x",
        ),
    ],
)
def test_bad_flags_exit_2(launch: Any, model: Path, args: list[str], error: str) -> None:
    fake = launch(model, *args)
    assert fake.wait() == 2
    assert "usage: vllm serve [model_tag] [options]" in fake.log and error in fake.log


@pytest.mark.timeout(30)
def test_model_resolution(launch: Any, model: Path, tmp_path: Path) -> None:
    log = failed(launch("./does-not-exist"))
    assert (
        "huggingface_hub.errors.HFValidationError: Repo id must be in the form 'repo_name' or "
        "'namespace/repo_name': './does-not-exist'. Use `repo_type` argument if needed."
    ) in log
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    log = failed(launch("someorg/nonexistent-model", env=env))
    assert "huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate" in log
    snapshot = tmp_path / "hub" / "models--org--llama" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(LLAMA_8B))
    log = failed(launch("org/llama", "--max-model-len", "200000", env=env))  # resolved, then P0
    assert "max_position_embeddings=131072.0" in log


@pytest.mark.timeout(30)
def test_port_in_use_fails_fast_and_port_refuses_until_ready(launch: Any, model: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cmd = [sys.executable, "-m", "autotune.testing.fake_engine", "serve", str(model)]
        proc = subprocess.run(
            [*cmd, "--host", "127.0.0.1", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=25,
            env={**os.environ, "AUTOTUNE_FAKE_STARTUP_S": "60"},
        )
        assert proc.returncode == 1
        assert "OSError: [Errno 98] Address already in use" in proc.stderr
        assert "EngineCore" not in proc.stderr  # fails fast: before the engine's start-up
    slow = launch(model, "--max-model-len", "8192", env={"AUTOTUNE_FAKE_STARTUP_S": "2"})
    while "Initializing a V1 LLM engine" not in slow.log:  # the port is bound by then
        time.sleep(0.02)
    with pytest.raises(httpx.ConnectError):
        httpx.get(slow.url + "/health")
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(("127.0.0.1", slow.port))
    slow.wait_ready()


@pytest.mark.timeout(30)
def test_sigterm_stops_server_and_engine_child(launch: Any, model: Path) -> None:
    fake = launch(model, "--max-model-len", "8192")
    fake.wait_ready()
    children = psutil.Process(fake.proc.pid).children()
    assert len(children) == 1
    assert os.getpgid(children[0].pid) == os.getpgid(fake.proc.pid)
    fake.proc.send_signal(signal.SIGTERM)
    assert fake.wait(20) == 0
    assert not children[0].is_running()
    with pytest.raises(httpx.ConnectError):
        httpx.get(fake.url + "/health")


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(30)
def test_sigterm_during_startup_exits_0(launch: Any, model: Path) -> None:
    # A start-up of 60 s: exiting within the wait below means it did not wait for the start-up.
    fake = launch(model, "--max-model-len", "8192", env={"AUTOTUNE_FAKE_STARTUP_S": "60"})
    while "Initializing a V1 LLM engine" not in fake.log:  # its EngineCore child started
        time.sleep(0.02)
    (child,) = psutil.Process(fake.proc.pid).children()
    fake.proc.send_signal(signal.SIGTERM)
    assert fake.wait(20) == 0
    assert not alive(child)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("exit_on_orphan", [False, True])
def test_sigkill_leaves_engine_child_orphaned(
    launch: Any, model: Path, exit_on_orphan: bool
) -> None:
    env = {"AUTOTUNE_FAKE_CHILD_EXIT_ON_ORPHAN": "1"} if exit_on_orphan else {}
    fake = launch(model, "--max-model-len", "8192", env=env)
    fake.wait_ready()
    (child,) = psutil.Process(fake.proc.pid).children()
    try:
        fake.proc.kill()
        fake.wait()
        if exit_on_orphan:  # the child polls its parent once a second
            deadline = time.monotonic() + 20
            while alive(child) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            time.sleep(2.5)  # more than two of its polls
        assert alive(child) is not exit_on_orphan
    finally:
        if alive(child):
            child.kill()


RUNNING = re.compile(r"^vllm:num_requests_running\{[^}]*\} ([\d.]+)$", re.M)


def running_under_load(fake: Fake, requests: int = 16, max_tokens: int = 64) -> tuple[int, int]:
    """Send ``requests`` concurrent completions; return (the most requests the fake's /metrics
    showed running at once, the completion tokens served)."""
    body = {"prompt": "a b c d e f g h", "max_tokens": max_tokens, "ignore_eos": True}
    limits = httpx.Limits(max_connections=requests + 1)
    with httpx.Client(base_url=fake.url, timeout=60, limits=limits) as client:

        def one(_: int) -> int:
            resp = client.post("/v1/completions", json=body)
            resp.raise_for_status()
            tokens: int = resp.json()["usage"]["completion_tokens"]
            return tokens

        peak = 0
        with ThreadPoolExecutor(requests) as pool:
            futures = [pool.submit(one, i) for i in range(requests)]
            while not all(f.done() for f in futures):
                running = RUNNING.search(client.get("/metrics").text)
                assert running, "no vllm:num_requests_running in /metrics"
                peak = max(peak, int(float(running[1])))
                time.sleep(0.01)
        return peak, sum(f.result() for f in futures)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_running_batch_grows_with_max_num_seqs(launch: Any, model: Path) -> None:
    """The fake's own scheduling numbers, not its speed: with max_num_seqs 4 at most 4 requests
    run at once; with 64, all 16 requests fit in the batch and more than 4 run together."""
    peaks = {}
    for seqs in (4, 64):
        fake = launch(model, "--max-model-len", "8192", "--max-num-seqs", str(seqs))
        fake.wait_ready()
        peaks[seqs], served = running_under_load(fake)
        assert served == 16 * 64
        fake.stop()
    assert 1 <= peaks[4] <= 4 < peaks[64] <= 16, peaks


@pytest.mark.timeout(30)
def test_crash_under_load(launch: Any, model: Path) -> None:
    env = {"AUTOTUNE_FAKE_LOAD_OOM_UTIL": "0.9"}
    fake = launch(model, "--max-model-len", "8192", env=env)
    fake.wait_ready()
    (engine_core,) = psutil.Process(fake.proc.pid).children()
    body = {"prompt": "a b c", "max_tokens": 200, "ignore_eos": True}

    def one(_: int) -> int:
        try:
            return httpx.post(fake.url + "/v1/completions", json=body, timeout=10).status_code
        except httpx.TransportError:
            return -1

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(one, range(4)))
    assert all(code != 200 for code in codes), codes
    with contextlib.suppress(httpx.TransportError):  # unless it is already gone
        assert httpx.get(fake.url + "/health", timeout=1).status_code == 503
    log = failed(fake)
    assert "torch.OutOfMemoryError: CUDA out of memory." in log
    assert "EngineDeadError: EngineCore encountered an issue." in log
    assert not engine_core.is_running()


@pytest.mark.timeout(30)
def test_crash_after_n_requests(launch: Any, model: Path) -> None:
    fake = launch(model, "--max-model-len", "8192", env={"AUTOTUNE_FAKE_CRASH_AFTER_REQUESTS": "2"})
    fake.wait_ready()
    body = {"prompt": "a b c", "max_tokens": 3}
    for _ in range(2):
        assert httpx.post(fake.url + "/v1/completions", json=body, timeout=10).status_code == 200
    assert fake.wait() == 1
    assert "EngineDeadError" in fake.log


def test_version_flag() -> None:
    cmd = [sys.executable, "-m", "autotune.testing.fake_engine", "--version"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True)
    assert out.stdout.strip() == "0.33.0+fake"


class CountingEngine(BatchEngine):
    """The batch loop, counting its steps: each one costs the fake a step's time."""

    steps = 0

    def _commit(self, decode: list[Request], prefill: list[tuple[Request, int]]) -> None:
        self.steps += 1
        super()._commit(decode, prefill)


def run_batch(capacity: int, requests: int = 16, max_num_seqs: int = 64) -> dict[str, float]:
    """Drive the in-process batch loop; return its final counters, its steps and peak batch."""
    engine = CountingEngine(
        max_num_seqs=max_num_seqs, max_num_batched_tokens=64, capacity=capacity, time_scale=0.05
    )
    engine.start()
    reqs = [engine.submit(10, 40, 40) for _ in range(requests)]
    peak = 0
    for req in reqs:
        items = []
        while (item := req.out.get(timeout=20)) == 1:
            items.append(item)
            peak = max(peak, int(engine.snapshot()["running"]))
        assert (item, len(items)) == ("length", 40)
    engine.stop()
    return {**engine.snapshot(), "peak": peak, "steps": engine.steps}


@pytest.mark.timeout(60)
def test_kv_capacity_limits_concurrency_and_preempts() -> None:
    small = run_batch(capacity=100)
    big = run_batch(capacity=100_000)
    assert small["preemptions"] > 0 and big["preemptions"] == 0
    assert small["peak"] <= 6 < big["peak"]
    assert small["length"] == big["length"] == 16
    assert small["steps"] > 2 * big["steps"], (small, big)  # smaller batches: more steps


# --- Vision models (LLaVA-1.5-7B-like): encoder profile at startup, image limits per prompt ---

LLAVA = {
    "architectures": ["LlavaForConditionalGeneration"],
    "torch_dtype": "float16",
    "vision_feature_select_strategy": "default",
    "text_config": {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "vocab_size": 32064,
        "intermediate_size": 11008,
        "max_position_embeddings": 4096,
    },
    "vision_config": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 336,
        "patch_size": 14,
        "intermediate_size": 4096,
    },
}
T = (336 // 14) ** 2  # 576 image tokens ("default" drops CLS)
ENCODER = re.compile(
    r"Encoder cache will be initialized with a budget of (\d+) tokens, and profiled with (\d+) "
    r"image items of the maximum feature size\."
)
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n fake pixels").decode()


def images_rule(mbt: int, seqs: int, limit: int, max_len: int = 4096) -> int:
    """vllm-facts §3.2, written out independently of the fake."""
    if limit == 0:
        return 0
    budget = max(mbt, T)
    per_prompt = max(1, min(limit, max_len // T))
    return max(1, min(budget // T, seqs * per_prompt))


@pytest.fixture
def llava(tmp_path: Path) -> Path:
    path = tmp_path / "llava-1.5-7b"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(LLAVA))
    return path


def test_vision_model_info_and_profiled_images_rule() -> None:
    info = ModelInfo.from_config(LLAVA)
    assert info.is_vision and info.image_tokens == T and info.vision_params > 0
    full = ModelInfo.from_config({**LLAVA, "vision_feature_select_strategy": "full"})
    assert full.image_tokens == T + 1
    text = ModelInfo.from_config(LLAMA_8B)
    assert not text.is_vision and text.image_tokens is None
    for mbt, seqs, limit, length in [
        (2048, 256, 999, 4096), (2048, 1, 2, 4096), (16384, 64, 999, 4096),
        (16384, 2, 1, 4096), (512, 8, 5, 4096), (8192, 4, 999, 1000), (2048, 256, 0, 4096),
    ]:  # fmt: skip
        cfg = ServeConfig(0.9, seqs, mbt, length, image_limit=limit)
        assert profiled_images(cfg, info) == images_rule(mbt, seqs, limit, length)
        assert profiled_images(cfg, text) == 0
    no_tower = ServeConfig(0.9, 8, 2048, 4096, image_limit=0)
    assert weights_gib(no_tower, info, FakeEnv()) < weights_gib(
        ServeConfig(0.9, 8, 2048, 4096), info, FakeEnv()
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("args", "limit"), [([], 999), (["--max-num-seqs", "1"], 2)])
def test_vision_encoder_profile_line(launch: Any, llava: Path, args: list[str], limit: int) -> None:
    flags = ["--limit-mm-per-prompt", json.dumps({"image": limit})] if limit != 999 else []
    fake = launch(llava, *args, *flags)
    fake.wait_ready()
    match = ENCODER.search(fake.log)
    assert match, fake.log
    seqs = int(args[1]) if args else 256
    assert (int(match[1]), int(match[2])) == (2048, images_rule(2048, seqs, limit))
    assert fake.log.index("Encoder cache will") < fake.log.index("Available KV cache memory")
    off = launch(llava, "--limit-mm-per-prompt", '{"image": 0}')  # no tower, no profile
    off.wait_ready()
    assert "Encoder cache will be initialized" not in off.log
    assert "explicitly disabled via limit_mm_per_prompt" in off.log
    weights = [float(re.findall(r"Model loading took ([\d.]+) GiB", f.log)[0]) for f in (fake, off)]
    assert weights[1] < weights[0]


@pytest.mark.timeout(30)
def test_vision_encoder_profiling_oom(launch: Any, llava: Path) -> None:
    env = {"AUTOTUNE_FAKE_IMAGE_MIB": "800"}
    big = ["--max-num-batched-tokens", "16384"]
    log = failed(launch(llava, *big, "--max-num-seqs", "64", env=env))  # 28 images of 800 MiB
    match = ENCODER.search(log)
    assert match and int(match[2]) == images_rule(16384, 64, 999) == 28, log
    assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 800.00 MiB" in log
    assert "in profile_run" in log and "in _execute_mm_encoder" in log
    assert "Model loading took" in log and "Available KV cache memory" not in log
    small = launch(
        llava, *big, "--limit-mm-per-prompt", '{"image": 1}', "--max-num-seqs", "2", env=env
    )
    small.wait_ready()  # 2 images
    assert (match := ENCODER.search(small.log)) and int(match[2]) == 2
    assert "OutOfMemoryError" not in small.log


def kv_and_peak(log: str) -> tuple[int, float]:
    tokens = re.search(r"GPU KV cache size: ([\d,]+) tokens", log)
    peak = re.search(r"([\d.]+) GiB for peak activation", log)
    assert tokens and peak, log
    return int(tokens[1].replace(",", "")), float(peak[1])


@pytest.mark.timeout(30)
def test_vision_size_hints_shrink_encoder_memory(launch: Any, llava: Path) -> None:
    env = {"AUTOTUNE_FAKE_IMAGE_MIB": "800"}
    hinted = {"image": {"count": 4, "width": 168, "height": 168}}  # a quarter of 336x336
    fakes = [
        launch(llava, "--limit-mm-per-prompt", json.dumps(limit), env=env)
        for limit in ({"image": 4}, hinted)
    ]
    for fake in fakes:
        fake.wait_ready()
    (full_kv, full_peak), (hint_kv, hint_peak) = (kv_and_peak(f.log) for f in fakes)
    n = images_rule(2048, 256, 4)
    assert all(f"profiled with {n} image items" in f.log for f in fakes)
    assert hint_kv > full_kv
    assert full_peak - hint_peak == pytest.approx(n * 800 / 1024 * 0.75, abs=0.02)
    bad = launch(llava, "--limit-mm-per-prompt", '{"image": {"count": 2, "depth": 3}}')
    log = failed(bad)
    assert "1 validation error for MultiModalConfig" in log and "EngineCore" not in log
    assert (
        "Unexpected keyword argument [type=unexpected_keyword_argument, input_value=3, "
        "input_type=int]"
    ) in log


def chat_images(n: int) -> dict[str, Any]:
    parts = [{"type": "image_url", "image_url": {"url": PNG}} for _ in range(n)]
    content = [*parts, {"type": "text", "text": "describe the image"}]
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 2}


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_vision_requests_count_and_limit_images(launch: Any, llava: Path, model: Path) -> None:
    fake = launch(llava, "--max-num-seqs", "8", "--limit-mm-per-prompt", '{"image": 2}')
    text = launch(model, "--max-model-len", "8192", "--limit-mm-per-prompt", '{"image": {"x": 1}}')
    fake.wait_ready()
    url = fake.url + "/v1/chat/completions"
    usage = [httpx.post(url, json=chat_images(n), timeout=10).json()["usage"] for n in (0, 1, 2)]
    prompts = [u["prompt_tokens"] for u in usage]
    assert prompts == [prompts[0], prompts[0] + T, prompts[0] + 2 * T]
    refused = httpx.post(url, json=chat_images(3), timeout=10)
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": "At most 2 image(s) may be provided in one prompt. (parameter=image)",
        "type": "BadRequestError",
        "param": "image",
        "code": 400,
    }
    garbage = chat_images(1)
    garbage["messages"][0]["content"][0]["image_url"]["url"] = "data:image/png;base64,@@@"
    assert httpx.post(url, json=garbage, timeout=10).status_code == 400
    alt = {"messages": [{"role": "user", "content": [{"type": "image", "image": PNG}]}]}
    assert httpx.post(url, json=alt, timeout=10).json()["usage"]["prompt_tokens"] == T + 4
    text.wait_ready()  # a text model ignores the flag, and refuses images
    error = httpx.post(text.url + "/v1/chat/completions", json=chat_images(1), timeout=10)
    assert error.status_code == 400
    assert error.json()["error"]["message"] == f"{model} is not a multimodal model"
