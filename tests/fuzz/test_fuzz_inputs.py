"""Fuzzing the remaining untrusted inputs: ``--dataset`` lines and ``--storage`` URLs. A dataset
loads or is refused with one line; a storage URL is checked or refused with one line, and its
masked form never holds the password."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from autotune.errors import UserError
from autotune.load.dataset import load_dataset
from autotune.masking import redact_url
from autotune.search.workers.storage import check_sqlite

SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
ROW_KEYS = st.sampled_from(["prompt", "messages", "output_len", "images", "timestamp", "x"])
ROWS = st.dictionaries(ROW_KEYS, JSON, max_size=4)
RAW_LINES = st.one_of(
    ROWS.map(lambda row: json.dumps(row)),
    st.text(max_size=80).filter(lambda s: "\n" not in s and "\r" not in s),
)


def _one_line(exc: UserError) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text


@SETTINGS
@given(lines=st.lists(RAW_LINES, min_size=0, max_size=6))
def test_dataset_lines_load_or_are_refused(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        requests = load_dataset(path, default_output_len=16)
    except UserError as exc:
        _one_line(exc)
        return
    assert requests and all(r.max_tokens >= 1 for r in requests)


PASSWORDS = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=6, max_size=20
)


@SETTINGS
@given(
    user=st.text(alphabet="abcdefgh", max_size=6),
    password=PASSWORDS,
    host=st.sampled_from(["db", "db.example:5432", "10.0.0.1"]),
    query=st.sampled_from(["", "?sslmode=require", "?password={pw}", "?application_name=x"]),
)
def test_a_storage_password_never_survives_masking(
    user: str, password: str, host: str, query: str
) -> None:
    encoded = quote(password, safe="")  # a query value must be percent-encoded
    assume(password not in f"postgresql://{user}:@{host}/optuna{query}")
    assume(encoded not in f"postgresql://{user}:@{host}/optuna{query}")
    url = f"postgresql://{user}:{password}@{host}/optuna{query.format(pw=encoded)}"
    shown = redact_url(url)
    assert password not in shown and encoded not in shown, (url, shown)
    assert host in shown


@SETTINGS
@given(url=st.one_of(st.text(max_size=60), st.text(max_size=40).map(lambda p: "sqlite:///" + p)))
def test_storage_urls_are_checked_or_refused_with_one_line(url: str) -> None:
    try:
        check_sqlite(url)
    except UserError as exc:
        _one_line(exc)
