"""Prompt accounting for the fake engine's HTTP API: text tokens, and images for vision models.

Images follow vLLM's request-time rules (vllm-facts §3.3): at most ``limit`` per prompt, ``T``
prompt tokens each, data URLs decoded as base64 (no image library needed), and a text-only model
refuses them.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from autotune.testing._fake_model import ModelInfo

IMAGE_PARTS = ("image_url", "image", "input_image")


class PromptError(Exception):
    """A request vLLM would refuse: HTTP status, message, error type and parameter."""

    def __init__(self, code: int, message: str, kind: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.kind, self.param = code, message, kind, param


def _image_url(part: dict[str, Any]) -> str:
    """The URL of an image content part ("" when it carries none, e.g. a uuid-only item)."""
    value = part.get("image_url", part.get("image"))
    if isinstance(value, dict):
        value = value.get("url")
    return value if isinstance(value, str) else ""


def prompt_parts(body: dict[str, Any], chat: bool) -> tuple[int, list[str]]:
    """(text tokens, image URLs): words for text, list length for token ids, +4 per message."""
    if not chat:
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return len(prompt), []
        texts = prompt if isinstance(prompt, list) else [prompt]
        return sum(len(str(t).split()) for t in texts), []
    tokens, images = 0, []
    for message in body["messages"]:
        content = message.get("content") or ""
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts:
            if part.get("type") == "text":
                tokens += len(str(part.get("text", "")).split())
            elif part.get("type") in IMAGE_PARTS:
                images.append(_image_url(part))
        tokens += 4
    return tokens, images


def _load(url: str) -> None:
    """Check an image URL as vLLM's MediaConnector would before decoding it."""
    if url.startswith("data:"):
        spec, sep, data = url[5:].partition(",")
        if not sep:
            msg = f"Invalid data URL {url[:32]!r}: missing ',' separator."
            raise PromptError(400, msg, "BadRequestError")
        _, sep, encoding = spec.rpartition(";")
        if not sep or encoding != "base64":
            msg = "Only base64 data URLs are supported for now."
            raise PromptError(501, msg, "NotImplementedError")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PromptError(400, str(exc), "BadRequestError") from None
    elif url.startswith("file:"):
        msg = "Cannot load local files without `--allowed-local-media-path`."
        raise PromptError(500, msg, "InternalServerError")
    elif url and not url.startswith(("http://", "https://")):
        msg = "The URL must be either a HTTP, data or file URL."
        raise PromptError(400, msg, "BadRequestError")


def image_tokens(images: list[str], model: ModelInfo | None, limit: int, name: str) -> int:
    """Prompt tokens the images add; raise ``PromptError`` where vLLM refuses them."""
    if not images:
        return 0
    if model is None or model.image_tokens is None:
        raise PromptError(400, f"{name} is not a multimodal model", "BadRequestError")
    if len(images) > limit:
        msg = f"At most {limit} image(s) may be provided in one prompt. (parameter=image)"
        raise PromptError(400, msg, "BadRequestError", "image")
    for url in images:
        _load(url)
    return len(images) * model.image_tokens
