"""Where a profile is filed: ``<model>/<hardware>/<workload>--<objective>[--limits-<hash>]
--vllm-<version>.yaml`` under the store's root. Every segment is one plain name (never ``..``,
never hidden, never a separator), so a path always stays inside the root; a name that is not
plain gets a readable stem and a hash of the exact text, so distinct names never share a file.
Plain ASCII names (the usual ``org--model``, ``in512-out128``, ``0.33.0``) are kept as they are.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

DERIVED_LIMIT = "memory_budget_gib"  # the budget share times this GPU's memory: not a key
SEGMENT_LIMIT = 128  # a folder name
PART_LIMIT = 64  # each part of a file name (at most ~225 bytes in all, under NAME_MAX)
_PLAIN = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]*")


def slug(text: str, *, limit: int = SEGMENT_LIMIT, in_name: bool = False) -> str:
    """``text`` as one path segment: itself when plain (letters, digits, ``._+-``, not starting
    with ``.`` or ``-``, not ending with ``-``, at most ``limit`` long; inside a file name, no
    ``--``, which joins the parts), else a stem, ``~`` and 8 hex digits of the text's hash."""
    plain = _PLAIN.fullmatch(text) and not text.endswith("-") and len(text) <= limit
    if plain and not (in_name and "--" in text):
        return text
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "-", text)
    stem = re.sub(r"-{2,}", "-", stem) if in_name else stem
    stem = stem.strip("-.")[: limit - 9].strip("-.") or "x"
    digest = hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()[:8]
    return f"{stem}~{digest}"


def limits_key(constraints: Mapping[str, Any]) -> dict[str, Any]:
    """The limits a profile was tuned under, as given (SLOs, throughput floor, budget share)."""
    return {k: v for k, v in constraints.items() if k != DERIVED_LIMIT}


def limits_tag(constraints: Mapping[str, Any]) -> str:
    """``--limits-<hash>`` for a profile held to limits (none: no tag, the older names)."""
    key = limits_key(constraints)
    if not key:
        return ""
    text = json.dumps(key, sort_keys=True, default=str)
    return "--limits-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def relative_path(
    *,
    model_name: str,
    hardware_key: str,
    signature: str,
    objective: str,
    constraints: Mapping[str, Any],
    vllm_version: str | None,
) -> PurePath:
    """The profile's path relative to the store's root."""

    def part(text: str) -> str:
        return slug(text, limit=PART_LIMIT, in_name=True)

    name = (
        f"{part(signature)}--{part(objective)}{limits_tag(constraints)}"
        f"--vllm-{part(vllm_version or 'unknown')}.yaml"
    )
    return PurePath(slug(model_name), slug(hardware_key), name)
