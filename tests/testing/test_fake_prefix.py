"""The fake engine's prefix cache (a test double of vLLM's automatic prefix caching): chained block
hashes, hits for shared leading blocks only, none with caching off, eviction bounded by the KV
cache, and the two counters on ``/metrics`` under vLLM's names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autotune.engine.probes import prefix_cache_counts
from autotune.testing._fake_batch import BatchEngine, Request
from autotune.testing._fake_prefix import PrefixCache, block_hashes, prompt_keys
from autotune.testing._fake_prompt import prompt_parts
from tests.conftest import write_model
from tests.testing.test_fake_engine import free_port

pytestmark = pytest.mark.timeout(60)
BS = 16


def test_hashes_are_chained_over_full_blocks() -> None:
    a = list(range(40))  # two full blocks and 8 tokens
    b = [999, *range(1, 40)]  # differs in the first token only
    ha, hb = block_hashes(a, BS), block_hashes(b, BS)
    assert len(ha) == len(hb) == 2  # the partial last block has no hash
    assert ha[0] != hb[0] and ha[1] != hb[1]  # same second block, other first: no match
    assert block_hashes(a[:32] + [7] * 8, BS) == ha  # only full blocks count
    assert block_hashes(a[:15], BS) == ()


def test_prompt_keys_count_tokens_as_the_fake_does() -> None:
    bodies: list[tuple[dict[str, Any], bool]] = [
        ({"prompt": list(range(37))}, False),
        ({"prompt": "one two three four"}, False),
        ({"prompt": ["a b", "c"]}, False),
        ({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [
            {"type": "text", "text": "hello there you"}]}]}, True),
    ]  # fmt: skip
    for body, chat in bodies:
        tokens, images = prompt_parts(body, chat)
        assert not images
        assert len(prompt_keys(body, chat, 0)) == tokens
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    chat_image = {"messages": [{"role": "user", "content": [image, {"type": "text", "text": "x"}]}]}
    assert len(prompt_keys(chat_image, True, 10)) == 4 + 10 + 1
    # the same system prompt, other questions: the same leading keys
    short, long = ({"messages": [{"role": "system", "content": "s " * n}]} for n in (40, 50))
    assert prompt_keys(short, True, 0) == prompt_keys(long, True, 0)[:44]


class PrefillCounting(BatchEngine):
    """The batch loop, counting the prompt tokens it actually prefilled."""

    prefilled = 0

    def _commit(self, decode: list[Request], prefill: list[tuple[Request, int]]) -> None:
        self.prefilled += sum(n for _, n in prefill)
        super()._commit(decode, prefill)


def serve_one_by_one(
    prompts: list[list[int]], *, caching: bool, capacity: int = 100_000
) -> PrefillCounting:
    """Send the prompts one after the other (each to its end) through an in-process batch loop."""
    engine = PrefillCounting(
        max_num_seqs=8, max_num_batched_tokens=64, capacity=capacity, time_scale=0.01
    )
    engine.start()
    try:
        for ids in prompts:
            blocks = block_hashes(ids, engine.block_size) if caching else None
            req = engine.submit(len(ids), 2, 2, blocks=blocks)
            while (item := req.out.get(timeout=20)) == 1:
                pass
            assert item == "length"
    finally:
        engine.stop()
    return engine


def shared(n: int, *, prefix: int, total: int) -> list[list[int]]:
    """``n`` prompts of ``total`` tokens whose first ``prefix`` tokens are the same."""
    head = list(range(1000, 1000 + prefix))
    return [head + [10_000 * (i + 1) + t for t in range(total - prefix)] for i in range(n)]


def test_shared_blocks_hit_and_shrink_the_prefill() -> None:
    prompts = shared(4, prefix=64, total=80)  # 4 shared blocks, then 16 tokens of each its own
    on = serve_one_by_one(prompts, caching=True)
    off = serve_one_by_one(prompts, caching=False)
    assert (on.prefix.queries, on.prefix.hits) == (4 * 80, 3 * 64)  # the first one finds nothing
    assert (off.prefix.queries, off.prefix.hits) == (0, 0)  # nothing looked up, as vLLM
    assert off.prefilled == 4 * 80
    assert on.prefilled == 4 * 80 - 3 * 64
    assert on.snapshot()["prefix_hits"] == 3 * 64


def test_a_fully_cached_prompt_still_computes_its_last_block() -> None:
    prompt = list(range(64))  # exactly 4 blocks
    engine = serve_one_by_one([prompt, prompt], caching=True)
    assert engine.prefix.hits == 48  # at most prompt - 1 tokens: whole blocks, the last recomputed
    assert engine.prefilled == 64 + 16


def test_eviction_keeps_the_cache_within_the_kv_cache() -> None:
    capacity = 16 * BS  # 16 blocks of KV cache
    distinct = [[10_000 * i + t for t in range(4 * BS)] for i in range(1, 11)]
    engine = serve_one_by_one(
        [*distinct, distinct[-1], distinct[0]], caching=True, capacity=capacity
    )
    assert len(engine.prefix.blocks) * BS <= capacity
    assert engine.prefix.unpinned == len(engine.prefix.blocks)  # nothing runs any more
    assert engine.prefix.hits == 3 * BS  # the latest prompt was still cached, the first evicted


def test_blocks_in_use_are_never_evicted() -> None:
    cache = PrefixCache()
    cache.acquire((1, 2, 3))
    cache.acquire((4, 5))
    cache.release((4, 5))
    assert cache.unpinned == 2
    assert cache.evict(free_blocks=2) == 0  # they fit in the free KV cache
    cache.acquire((5,))  # used again: pinned
    cache.release((5,))  # unpinned, and now the most recently used
    assert cache.evict(free_blocks=1) == 1 and list(cache.blocks) == [1, 2, 3, 5]
    assert cache.evict(free_blocks=0) == 1  # only the unpinned ones
    assert list(cache.blocks) == [1, 2, 3] and cache.unpinned == 0
    assert cache.lookup((1, 2, 9), tokens=100, block_size=BS, count=True) == 2 * BS
    assert cache.lookup((9, 1), tokens=100, block_size=BS, count=False) == 0  # leading blocks only
    assert (cache.queries, cache.hits) == (100, 2 * BS)


@pytest.fixture
def fake_url(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    model = write_model(tmp_path / "llama-8b")
    port = free_port()
    cmd = [sys.executable, "-m", "autotune.testing.fake_engine", "serve", str(model)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--max-model-len", "4096", *request.param]
    env = {**os.environ, "AUTOTUNE_FAKE_STARTUP_S": "0.1", "AUTOTUNE_FAKE_TIME_SCALE": "0.05"}
    log = tmp_path / "fake.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("fake_url", [[], ["--no-enable-prefix-caching"]], indirect=True)
def test_metrics_show_the_counters_as_vllm(fake_url: str) -> None:
    text = httpx.get(fake_url + "/metrics").text
    for name in ("prefix_cache_queries", "prefix_cache_hits"):
        assert f"# TYPE vllm:{name} counter" in text
        assert re.search(rf"^vllm:{name}_total{{[^}}]*}} 0\.0$", text, re.M)
    caching = 'enable_prefix_caching="True"' in text
    for ids in shared(3, prefix=48, total=60):
        body = {"prompt": ids, "max_tokens": 2}
        assert httpx.post(fake_url + "/v1/completions", json=body, timeout=20).status_code == 200
    expected = (180.0, 2 * 48.0) if caching else (0.0, 0.0)  # vLLM counts nothing when off
    assert prefix_cache_counts(fake_url) == expected
