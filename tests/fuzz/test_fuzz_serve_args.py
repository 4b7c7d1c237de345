"""``serve``'s vLLM flags, as options and after ``--``: a profile requirement, a reviewed profile
or one clear line, never a crash."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autotune.app.serve_args import requirements, review_extra
from autotune.engine.safety import TUNED_ARGS
from autotune.errors import UserError
from tests.profiles.test_store import make

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = st.sampled_from(
    ["gpu_memory_utilization", "kv_cache_memory_bytes", "max_num_seqs",
     "max_num_batched_tokens", "max_model_len", "image_limit"]
)  # fmt: skip
TEXT = st.one_of(
    st.from_regex(r"[0-9]{1,9}(\.[0-9]{1,3})?(:[0-9]{1,9}(\.[0-9]{1,3})?)?", fullmatch=True),
    st.text(alphabet="0123456789.:-GMKe", max_size=12),
)
FLAGS = st.sampled_from(
    ["-tp", "-pp", "--dtype", "--kv-cache-dtype", "--quantization", "--enforce-eager",
     "--no-enforce-eager", "--max-num-seqs", "--max_num_seq", "--gpu-memory-utilization",
     "--enable-prefix-caching", "--no-enable-prefix-caching", "--block-size", "--port",
     "--max-model-len=8192", "--kv-cache-dtype=fp8", "--"]
)  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(["fp8", "auto", "half", "2", "0.5", "-1", ""]), st.text(max_size=6)
)


@FUZZ
@given(ranges=st.dictionaries(NAMES, st.one_of(st.none(), TEXT), max_size=3))
def test_options_are_requirements_or_one_line(ranges: dict[str, str | None]) -> None:
    try:
        found = requirements(ranges)
    except UserError as exc:
        assert len(str(exc).splitlines()) == 1
        return
    assert len(found) == sum(v is not None for v in ranges.values())
    for req in found:
        assert req.low is not None or req.high is not None
        assert req.low is None or req.high is None or req.low <= req.high


@FUZZ
@given(extra=st.lists(st.one_of(FLAGS, VALUES), max_size=6), strict=st.booleans())
def test_args_after_dashdash_review_or_one_line(extra: list[str], strict: bool) -> None:
    profile = make("2026-01-01", max_model_len=4096)
    try:
        reviewed = review_extra(profile, extra, strict=strict)
    except UserError as exc:
        assert strict and len(str(exc).splitlines()) == 1
        return
    assert set(reviewed.vllm_args) <= set(profile.vllm_args) <= set(TUNED_ARGS)
    assert reviewed.extra_args == profile.extra_args
