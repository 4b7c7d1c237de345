"""One benchmark request, as the client sends it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """One request: a completion prompt or a chat conversation."""

    prompt: list[int] | str | None
    """Token ids or text for ``/v1/completions``."""
    messages: list[dict[str, object]] | None
    """Chat messages for ``/v1/chat/completions``."""
    max_tokens: int
    ignore_eos: bool
    timestamp: float | None = None
    """When a trace sent it (seconds, any origin; ``--trace`` replays the gaps), else None."""

    @property
    def is_chat(self) -> bool:
        """Whether the request goes to ``/v1/chat/completions``."""
        return self.messages is not None
