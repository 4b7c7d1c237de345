"""vLLM's multimodal rules that tuning needs: the image-limit argument and the number of dummy
images vLLM profiles at startup (vllm-facts §3; ``vllm/multimodal/encoder_budget.py``)."""

from __future__ import annotations

import json
import re
from typing import Any

IMAGE_DIM = "image_limit"  # the search dimension; vLLM's argument is limit_mm_per_prompt
LIMIT_ARG = "limit_mm_per_prompt"
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def limit_arg(count: int, *, size: tuple[int, int] | None = None) -> str:
    """The JSON vLLM expects: ``{"image": 2}``, or with size hints
    ``{"image": {"count": 2, "width": 512, "height": 512}}`` (the old ``image=2`` is rejected)."""
    if size is None:
        return json.dumps({"image": count})
    return json.dumps({"image": {"count": count, "width": size[0], "height": size[1]}})


def image_count(args: dict[str, Any]) -> int | None:
    """The image limit a candidate's arguments carry (None when there is none)."""
    text = args.get(LIMIT_ARG)
    if text is None:
        return None
    image = json.loads(str(text)).get("image")
    return int(image["count"] if isinstance(image, dict) else image)


def supports_size_hints(version: str | None) -> bool:
    """The configurable form with width/height came after vLLM 0.11.0 (docs PR #26200)."""
    m = _VERSION.match(version or "")
    if not m:
        return False
    return (int(m[1]), int(m[2]), int(m[3] or 0)) > (0, 11, 0)


def profiled_images(
    *,
    image_tokens: int,
    limit: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    max_model_len: int,
) -> int:
    """How many dummy images vLLM runs through the encoder at startup:
    min(encoder budget // tokens per image, max_num_seqs x images per prompt), at least 1."""
    if limit <= 0:
        return 0  # the vision tower is not even built
    budget = max(max_num_batched_tokens, image_tokens)
    per_prompt = max(1, min(limit, max_model_len // image_tokens))
    return max(1, min(budget // image_tokens, max_num_seqs * per_prompt))
