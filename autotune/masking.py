"""Secrets never reach text autotune writes or prints.

The values of secret flags (``--api-key K``, ``--hf-token=X``) and of the engine's secret
environment variables are remembered per process and replaced by ``***`` wherever they appear;
whatever looks like a secret next to its name (``'api_key': ['K']``, ``api_key='K'``,
``--hf-token X``, ``Bearer K``, a URL's password, ``?password=...``) is masked too, remembered
or not. Values shorter than ``MIN_LITERAL`` characters are masked only next to their name: a
literal ``"1"`` replaced everywhere would wreck the engine's log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

MASK = "***"
MIN_LITERAL = 4
ENV_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "VLLM_API_KEY")
_WORDS = r"(?:key|token|secret|password|passwd|pwd|credentials?)"
# A name with one of these words (not `max_num_batched_tokens`, `ssl_keyfile`, `KeyError`).
_NAME = re.compile(rf"(?:^|[-_.]){_WORDS}(?:$|[-_.])", re.IGNORECASE)
_known: frozenset[str] = frozenset()  # replaced whole, never changed in place (threads read it)

# Each pattern matches a name and only looks ahead at its value, so that a value swallowing the
# next name (`api_key= --api-key K`) cannot hide that name's value: every value found is masked.
# `name: value`, `name=value`, `'name': 'value'`, `"name": ["v1", "v2"]`
_PAIR = re.compile(
    rf"(?<![\w.-])(?P<name>[\w.-]{{0,64}}?{_WORDS}[\w.-]{{0,64}})(?![\w.-])"
    r"(?=['\"]?[ \t]{0,8}[:=][ \t]{0,8}"
    r"(?P<value>'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"|\[[^\]\n]*\]"
    r"|[^\s,;)}\]&'\"]+|['\"][^\s,;)}\]]*))",
    re.IGNORECASE,
)
# `--api-key K` (the `=` form is a pair)
_FLAG = re.compile(
    rf"(?<![\w.-])(?P<name>--?[\w.-]{{0,64}}?{_WORDS}[\w.-]{{0,64}})(?![\w.-])"
    r"(?=[ \t]{1,8}(?P<value>[^\s-]\S*))",
    re.IGNORECASE,
)
# `?password=x&...` in a URL
_QUERY = re.compile(r"(?<=[?&;])(?P<name>[\w.-]{1,64})(?==(?P<value>[^&#\s'\"]+))")
_BEARER = re.compile(r"(?<![\w-])(?P<name>bearer)(?=[ \t]+(?P<value>[^\s'\",;]+))", re.I)
# scheme://user:password@host: the password may hold an unencoded `@`, `/`, `?` or `#`; the
# last `@` before a space or quote ends it (more masked rather than less)
_URL_PASSWORD = re.compile(r"\b[a-zA-Z][\w+.-]{0,30}://[^:/?#@\s'\"]*:(?P<value>[^\s'\"]*)@")
_WHOLE_URL = re.compile(r"[a-zA-Z][\w+.-]{0,30}://[^:/?#@\s]*:(?P<value>\S+)@(?=\S*$)")
_KEEP = frozenset({"none", "null", "true", "false", ""})


def is_secret_name(name: str) -> bool:
    """``api_key``, ``--hf-token``, ``HF_TOKEN``, ``password``: a name that holds a secret."""
    return _NAME.search(name.strip("-'\"")) is not None


def is_secret_flag(flag: str) -> bool:
    return flag.startswith("-") and is_secret_name(flag)


def _secret_positions(args: Sequence[str]) -> dict[int, bool]:
    """Index → True for a secret flag given as ``--f=X``, False for a bare secret flag and for
    each value after it (``--api-key K1 K2``: vLLM takes several keys)."""
    found: dict[int, bool] = {}
    taking = False
    for i, arg in enumerate(args):
        flag, eq, _ = arg.partition("=")
        if is_secret_flag(flag):
            found[i] = bool(eq)
            taking = not eq
        elif taking and not arg.startswith("-"):
            found[i] = False
        else:
            taking = False
    return found


def secret_values(args: Sequence[str]) -> list[str]:
    """The values of the secret flags among ``args``."""
    out: list[str] = []
    for i, with_value in _secret_positions(args).items():
        arg = args[i]
        if with_value:
            out.append(arg.partition("=")[2])
        elif not is_secret_flag(arg):
            out.append(arg)
    return [v for v in out if v]


def strip_secrets(args: Sequence[str]) -> list[str]:
    """Drop secret flags and their values (``--api-key X``, ``--hf-token=X``) before saving."""
    hidden = _secret_positions(args)
    return [arg for i, arg in enumerate(args) if i not in hidden]


def redact(args: Sequence[str]) -> list[str]:
    """The same command line with secret values replaced by ``***`` (for logs)."""
    hidden = _secret_positions(args)
    out: list[str] = []
    for i, arg in enumerate(args):
        if i not in hidden:
            out.append(arg)
        elif hidden[i]:
            out.append(arg.partition("=")[0] + "=" + MASK)
        else:
            out.append(arg if is_secret_flag(arg) else MASK)
    return out


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """The values of the secret variables the engine reads (``HF_TOKEN``, ``VLLM_API_KEY``)."""
    return [env[name] for name in ENV_SECRETS if env.get(name)]


def remember(values: Iterable[str]) -> None:
    """Mask these values in everything this process writes or prints from now on."""
    global _known
    _known = _known | {v for v in values if len(v) >= MIN_LITERAL}


def remember_args(args: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """Remember the secrets of a command line (and of its environment); return them."""
    values = secret_values(args) + env_secrets(env or {})
    remember(values)
    return values


def _value_span(match: re.Match[str]) -> tuple[int, int] | None:
    """Where the secret of a match lies (inside its quotes or brackets), if it holds one."""
    value = match["value"]
    start, end = match.span("value")
    if match.re in (_PAIR, _FLAG, _QUERY) and not is_secret_name(match["name"]):
        return None
    if match.re in (_PAIR, _FLAG) and value[:1] in "'\"[":
        close = "]" if value[0] == "[" else value[0]
        start, end = start + 1, end - (len(value) > 1 and value.endswith(close))
    elif match.re in (_PAIR, _FLAG) and value.lower() in _KEEP:
        return None  # `api_key=None`: nothing to hide
    return (start, end) if end > start else None


def _mask_found(text: str, patterns: Sequence[re.Pattern[str]]) -> str:
    """``text`` with every value the patterns find replaced by ``***`` (overlaps merged)."""
    spans = sorted(
        span
        for pattern in patterns
        for match in pattern.finditer(text)
        if (span := _value_span(match)) is not None
    )
    out: list[str] = []
    pos = 0
    for start, end in spans:
        if end <= pos:
            continue
        out += [text[pos : max(start, pos)], MASK]
        pos = end
    return "".join(out) + text[pos:]


def redact_url(text: str) -> str:
    """A storage URL (or a text with URLs) fit for logs: ``postgresql://user:***@host/db``,
    ``...?password=***``."""
    whole = _WHOLE_URL.match(text)  # one URL: its password may hold quotes too
    if whole is not None:
        text = text[: whole.start("value")] + MASK + text[whole.end("value") :]
    return _mask_found(text, (_URL_PASSWORD, _QUERY))


def mask(text: str, *, values: Iterable[str] = ()) -> str:
    """``text`` with every remembered secret, every one of ``values``, and whatever looks like
    a secret next to its name replaced by ``***``."""
    literal = sorted({v for v in values if len(v) >= MIN_LITERAL} | _known, key=len, reverse=True)
    text = _replace(text, literal)
    text = _mask_found(text, (_URL_PASSWORD, _QUERY, _PAIR, _FLAG, _BEARER))
    return _replace(text, literal)  # a `*` of a value next to a mask must not rebuild it


def _replace(text: str, values: Sequence[str]) -> str:
    for value in values:
        while value in text:  # each pass shortens the text: a value is longer than the mask
            text = text.replace(value, MASK)
    return text
