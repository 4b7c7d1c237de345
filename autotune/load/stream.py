"""One streamed request to an OpenAI-compatible server, timed chunk by chunk the way
``vllm bench serve`` times it (see :mod:`autotune.load.metrics`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx

from autotune.load.metrics import RequestRecord
from autotune.load.request import Request
from autotune.load.responses import error_message, event_error, failed, has_content

__all__ = ["stream_one"]


async def stream_one(
    client: httpx.AsyncClient,
    model: str,
    request: Request,
    start: float,
    *,
    on_chunk: Callable[[], None] | None = None,
) -> RequestRecord:
    """POST one streaming request and time its chunks (``start``: when it was sent)."""
    payload: dict[str, object] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": request.ignore_eos,
        "temperature": 0,
    }
    if request.messages is not None:
        path = "/v1/chat/completions"
        payload.update(messages=request.messages, max_completion_tokens=request.max_tokens)
    else:
        path = "/v1/completions"
        payload.update(prompt=request.prompt, max_tokens=request.max_tokens)
    ttft: float | None = None
    itls: list[float] = []
    last = start
    chunks = 0
    usage: dict[str, object] = {}
    done = False
    error: str | None = None
    async with client.stream("POST", path, json=payload) as response:
        if response.status_code != 200:
            body = await response.aread()
            message = f"{response.status_code} {error_message(body)}"
            return failed(start, message, status=response.status_code)
        async for line in response.aiter_lines():
            if on_chunk is not None:
                on_chunk()
            if not line.startswith("data:") or error is not None:
                continue  # read to the end so the connection can be reused
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                continue
            event = json.loads(data)
            if not isinstance(event, dict):
                continue
            error = event_error(event)
            if has_content(event):
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - start
                else:
                    itls.append(now - last)
                last = now
                chunks += 1
            reported = event.get("usage")
            if isinstance(reported, dict):
                usage = reported
    end = time.perf_counter()
    if error is None and not done:
        error = "stream ended before [DONE]"
    prompt_tokens = usage.get("prompt_tokens")
    output_tokens = usage.get("completion_tokens")
    return RequestRecord(
        ok=error is None,
        prompt_tokens=prompt_tokens
        if isinstance(prompt_tokens, int)
        else (len(request.prompt) if isinstance(request.prompt, list) else 0),
        output_tokens=output_tokens if isinstance(output_tokens, int) else chunks,
        start=start,
        ttft_s=ttft,
        itls_s=tuple(itls),
        e2e_s=(end if ttft is None else last) - start,  # to the last token, as vLLM's bench
        error=error,
        status=200,
    )
