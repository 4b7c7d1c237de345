"""The benchmark's requests as the guide's moves see them: mean tokens, requests in flight.
Pure: no Optuna."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autotune.load.request import Request


@dataclass(frozen=True)
class Load:
    """The benchmark's requests as the fill move sees them."""

    request_tokens: int  # mean prompt + output tokens of a request
    in_flight: int  # requests in flight at most (the prompts, or --concurrency)
    prompt_tokens: int = 0  # mean prompt tokens of a request
    images: int = 0  # the most images one request carries (0: none, or the limit is searched)

    @classmethod
    def of(
        cls,
        requests: Sequence[Request],
        *,
        concurrency: int | None,
        image_tokens: int,
        searched_images: bool = False,
    ) -> Load:
        """Token counts of text prompts and chat messages are estimated (4 characters a
        token); an image counts ``image_tokens``. ``searched_images``: the image limit is what
        the study looks for (``--images max``), so the guide leaves it to the sampler."""
        prompts = output = images = 0
        for r in requests:
            output += r.max_tokens
            if isinstance(r.prompt, list):
                prompts += len(r.prompt)
            elif isinstance(r.prompt, str):
                prompts += len(r.prompt) // 4
            for m in r.messages or ():
                prompts += _message_tokens(m.get("content"), image_tokens=image_tokens)
            images = max(images, sum(_images(m.get("content")) for m in r.messages or ()))
        n = max(len(requests), 1)
        return cls(
            request_tokens=max((prompts + output) // n, 1),
            in_flight=min(n, concurrency or n),
            prompt_tokens=prompts // n,
            images=0 if searched_images else images,
        )


def _images(content: object) -> int:
    parts = content if isinstance(content, list) else []
    return sum(1 for p in parts if isinstance(p, dict) and p.get("type") == "image_url")


def _message_tokens(content: object, *, image_tokens: int) -> int:
    if isinstance(content, str):
        return len(content) // 4
    parts = content if isinstance(content, list) else []
    return sum(
        image_tokens if p.get("type") == "image_url" else len(str(p.get("text", ""))) // 4
        for p in parts
        if isinstance(p, dict)
    )


FEW_WAVES = 3  # ``wave_up`` saves a wave of these few


def waves(seqs: int, most: int) -> int:
    """Waves of at most ``seqs`` requests that ``most`` in flight take: the last, short wave runs
    its decode steps nearly empty."""
    return -(-most // max(seqs, 1))


def wave_up(seqs: int, most: int, *, reach: float) -> int:
    """``seqs`` raised to the fewest sequences that take the requests in flight in one wave
    less, where they take few waves (``FEW_WAVES``; later waves blur as requests finish at
    different times) and that is at most ``reach`` times as many (46 sequences take 96
    requests in three waves, 48 in two); else ``seqs``."""
    now = waves(seqs, most)
    if now <= 1 or now > FEW_WAVES:
        return seqs
    up = -(-most // (now - 1))
    return up if up <= seqs * reach else seqs
