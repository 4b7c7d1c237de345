"""vLLM's multimodal rules that tuning needs: the image-limit argument and the number of dummy
images vLLM profiles at startup (vllm-facts §3; ``vllm/multimodal/encoder_budget.py``)."""

from __future__ import annotations

import json
import re
from typing import Any

IMAGE_DIM = "image_limit"  # the search dimension; vLLM's argument is limit_mm_per_prompt
LIMIT_ARG = "limit_mm_per_prompt"
DEFAULT_IMAGES = 16  # the top of the searched image limit by default
MOST_IMAGES = 64  # the most ``--images max`` searches (fewer when the context holds fewer)
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


def image_range(
    *,
    low: int,
    most: bool,
    image_tokens: int | None,
    max_model_len: int | None,
) -> tuple[int, int]:
    """The image limits searched: from ``low`` (``--min-images``) to ``DEFAULT_IMAGES``, or with
    ``most`` (``--images max``) to the images the context holds (``max_model_len`` ÷ tokens per
    image, when both are known) and at most ``MOST_IMAGES``; never below ``low``."""
    top = DEFAULT_IMAGES
    if most:
        fits = max_model_len // image_tokens if image_tokens and max_model_len else MOST_IMAGES
        top = min(MOST_IMAGES, fits)
    return low, max(top, low)


def most_images_line(count: int | None, *, trial: int, searched: tuple[int, int]) -> str:
    """What ``--images max`` found, saying so when it is the top of the searched range (more
    might fit: the search could not tell)."""
    low, high = searched
    line = f"largest image count that fits with usable throughput: {count} (trial {trial})"
    if count is not None and count >= high > low:
        line += (
            f"; the top of the searched range {low}..{high}, so more may fit: search higher "
            f"with --limit-mm-per-prompt {high}:N"
        )
    return line
