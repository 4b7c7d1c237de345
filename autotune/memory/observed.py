"""What a launch's startup numbers say about its memory, in bytes: vLLM prints GiB with two
decimals, so a logged size is an interval; a KV cache of whole blocks narrows it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autotune.engine.outcome import StartupInfo
from autotune.memory.calibration import ROUNDING
from autotune.memory.model import MemoryModel
from autotune.units import GIB

KV_BYTES = "kv_cache_memory_bytes"


def gib_bytes(value: float | None) -> int | None:
    """A logged GiB number in bytes (None stays None)."""
    return None if value is None else round(float(value) * GIB)


def kv_interval(args: Mapping[str, Any], startup: StartupInfo) -> tuple[int, int] | None:
    """A launch's KV cache in bytes, as an interval as exact as its arguments and log allow."""
    if KV_BYTES in args:
        return int(args[KV_BYTES]), int(args[KV_BYTES])
    if startup.kv_cache_bytes is not None:
        return startup.kv_cache_bytes, startup.kv_cache_bytes
    gib = gib_bytes(startup.kv_cache_gib)
    return None if gib is None else (gib - ROUNDING, gib + ROUNDING)


def blocks_consistent(
    pool: MemoryModel, lo: int, hi: int, tokens: int | None, length: int | None, est: int | None
) -> bool:
    """Could a pool of this geometry hold a KV cache of ``lo..hi`` bytes and print ``tokens``
    (and, after a KV-too-small failure, the estimated maximum length ``est``)?"""
    bs, bpb = pool.block_size, pool.bytes_per_block
    for blocks in range(max(0, lo // bpb), max(0, hi // bpb) + 1):
        if est is not None and est != (blocks - 1) * bs:
            continue
        forms = {blocks * bs}
        if length:
            forms.add(int(blocks / pool.blocks_per_request(int(length)) * int(length)))
        if tokens is None or tokens in forms:
            return True
    return False
