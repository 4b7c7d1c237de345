"""``--images max``: the image limits it searches (documented, derived from the context) and the
line that says when the answer is only the top of that range."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.engine.multimodal import DEFAULT_IMAGES, MOST_IMAGES, image_range, most_images_line
from autotune.hardware import parse_gpu_spec
from autotune.model import resolve_model
from autotune.search.space_build import build_space

LLAVA = Path(__file__).resolve().parents[2] / "examples" / "llava-1.5-7b"


@pytest.mark.parametrize(
    ("low", "most", "tokens", "length", "expected"),
    [
        (1, False, 576, 4096, (1, DEFAULT_IMAGES)),  # without --images max: unchanged
        (1, True, 576, 4096, (1, 7)),  # what a 4096-token context holds
        (1, True, 64, 32768, (1, MOST_IMAGES)),  # holds 512: capped
        (1, True, None, 4096, (1, MOST_IMAGES)),  # tokens per image unknown
        (1, True, 576, None, (1, MOST_IMAGES)),  # context unknown
        (9, True, 576, 4096, (9, 9)),  # never below --min-images
        (20, False, None, None, (20, 20)),
    ],
)
def test_the_searched_image_range(
    low: int, most: bool, tokens: int | None, length: int | None, expected: tuple[int, int]
) -> None:
    assert image_range(low=low, most=most, image_tokens=tokens, max_model_len=length) == expected


def test_the_space_takes_the_longest_context_it_searches() -> None:
    spec = resolve_model(str(LLAVA))
    gpu = parse_gpu_spec("L4:24", source="flag")
    short = build_space(spec=spec, hardware=gpu, overrides={"max_model_len": "2048"},
                        images_max=True)["image_limit"]  # fmt: skip
    assert (short.low, short.high) == (1, 2048 // 576)
    full = build_space(spec=spec, hardware=gpu, overrides={}, images_max=True, min_images=2)
    assert (full["image_limit"].low, full["image_limit"].high) == (2, 4096 // 576)


def test_the_top_of_the_range_is_said_when_reached() -> None:
    top = most_images_line(7, trial=4, searched=(1, 7))
    assert top.startswith("largest image count that fits with usable throughput: 7 (trial 4)")
    assert "top of the searched range 1..7" in top and "--limit-mm-per-prompt 7:N" in top
    inside = most_images_line(5, trial=4, searched=(1, 7))
    assert "top of the searched range" not in inside
    fixed = most_images_line(3, trial=0, searched=(3, 3))  # nothing was searched
    assert "top of the searched range" not in fixed
