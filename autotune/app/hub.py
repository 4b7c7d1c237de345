"""Clear before costly: a Hugging Face hub id that is not in the local cache needs the hub, so an
offline or unreachable hub is one line before any engine starts or any study is created."""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import httpx

from autotune.errors import UserError
from autotune.model import ModelSpec, hf_cache_dirs

__all__ = ["DEFAULT_ENDPOINT", "ENV_HUB_CHECK", "check_hub_model", "hub_offline", "unreachable"]

DEFAULT_ENDPOINT = "https://huggingface.co"
# "0": no check (the engine sees another cache or network than this machine, e.g. a container).
ENV_HUB_CHECK = "AUTOTUNE_HUB_CHECK"
PROBE_TIMEOUT_S = 3.0
_TRUE = frozenset({"1", "ON", "YES", "TRUE"})  # as huggingface_hub reads its flags


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set: vLLM will not download."""
    return any(
        os.environ.get(var, "").strip().upper() in _TRUE
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def check_hub_model(spec: ModelSpec, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """One line when ``spec`` is a hub id that is not cached here and the hub is offline or
    does not answer within ``timeout_s``; nothing for local or cached models, nor when
    ``AUTOTUNE_HUB_CHECK=0``."""
    if spec.known or spec.path is not None or os.environ.get(ENV_HUB_CHECK, "").strip() == "0":
        return
    model = spec.model_id
    caches = " or ".join(str(d) for d in hf_cache_dirs())
    fix = (
        f"download it first (hf download {model}), give a local model directory, or set "
        f"{ENV_HUB_CHECK}=0 if the engine has its own cache"
    )
    if hub_offline():
        raise UserError(
            f"{model} is not in the Hugging Face cache ({caches}) and HF_HUB_OFFLINE is set: "
            f"vLLM cannot fetch it; {fix}; nothing was launched"
        )
    endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    why = unreachable(endpoint, timeout_s=timeout_s)
    if why is not None:
        raise UserError(
            f"{model} is not in the Hugging Face cache ({caches}) and the hub {endpoint} cannot "
            f"be reached ({why}); {fix}; nothing was launched"
        )


@lru_cache(maxsize=8)
def unreachable(url: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why no connection to ``url`` is made within ``timeout_s`` (name lookup included), or
    None once one is (any answer, even a slow one: the hub is there). Proxies from the
    environment count."""
    result: list[str | None] = []

    def probe() -> None:
        try:
            httpx.head(url, timeout=timeout_s, follow_redirects=False)
            result.append(None)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as exc:
            result.append(_reason(exc))  # no connection: name lookup, refused, no route
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, OSError, ValueError) as exc:
            result.append(_reason(exc))
        except httpx.HTTPError:
            result.append(None)  # connected, then slow or odd: the hub is there

    worker = threading.Thread(target=probe, name="autotune-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout_s + 0.5)  # a stuck name lookup is not covered by httpx's timeout
    return result[0] if result else f"no answer in {timeout_s:g} s"


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
