"""Fuzzing the command line (issue 16, "Hostile input"): whatever the options, MODEL or the
arguments after ``--`` hold, ``autotune`` either succeeds or exits non-zero with exactly one
stderr line ``autotune: error: …`` — never a traceback, a hang or a huge allocation. Runs
in-process (``autotune.cli.main.main``) with ``plan`` or ``tune --vllm-cmd no-such-vllm``, so
no engine is ever started: every input is checked before the engine command is resolved."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autotune.cli.main import main
from autotune.load import dataset
from tests.conftest import LLAMA_8B, write_model
from tests.load.test_hostile_files import _png

CORPUS = yaml.safe_load((Path(__file__).parent / "corpus_cli.yaml").read_text())
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
NO_ENGINE = ["--vllm-cmd", "no-such-vllm-for-fuzzing serve"]
LINE_CAP = 1 << 20  # the dataset line cap while testing (the real one is 16 MiB)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """``autotune ARGS`` in-process: the exit code and the non-empty stderr lines."""
    capsys.readouterr()
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def assert_one_error(code: int, lines: list[str], needle: str = "") -> None:
    assert code != 0, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("autotune: error: "), lines
    assert needle in lines[0], (needle, lines)


def assert_ok_or_one_error(code: int, lines: list[str]) -> None:
    """Success, or exactly one error line, the last; notes before it (input that was good)
    are ``autotune:`` lines too, never a traceback."""
    assert all(line.startswith("autotune") for line in lines), lines
    errors = [line for line in lines if line.startswith("autotune: error: ")]
    if code != 0:
        assert len(errors) == 1 and lines[-1] == errors[0], lines
    else:
        assert not errors, lines


def assert_error_at_last(code: int, lines: list[str]) -> None:
    """``tune`` here never starts an engine: it always ends with one error line."""
    assert code != 0, lines
    assert_ok_or_one_error(code, lines)


def tune(model: Path, *args: str) -> list[str]:
    gpu = [] if "--gpu" in args else ["--gpu", "L4:24"]
    return ["tune", str(model), *gpu, *NO_ENGINE, *args]


# --- the corpus: every concrete input of the issue ------------------------------------------


def _image_dataset(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / f"{name}.png").write_bytes(data)
    path = tmp / f"{name}.jsonl"
    path.write_text(json.dumps({"prompt": "describe", "images": [f"{name}.png"]}) + "\n")
    return path


def _sqlite(path: Path, table: str, rows: int) -> Path:
    db = sqlite3.connect(path)
    db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
    db.executemany(f"INSERT INTO {table} (name) VALUES (?)", [("x" * 200,)] * rows)
    db.commit()
    db.close()
    return path


def _truncated(path: Path) -> Path:
    whole = _sqlite(path.with_suffix(".whole"), "studies", 200).read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return path


FILES: dict[str, Callable[[Path], Path]] = {
    "long_line": lambda t: _write(t / "long.jsonl", b'{"prompt": "' + b"a" * LINE_CAP + b'"}\n'),
    "deep": lambda t: _write(t / "deep.jsonl", b"[" * 200_000 + b"]" * 200_000 + b"\n"),
    "bomb": lambda t: _image_dataset(t, "bomb", _png(20_000, 20_000)),
    "bomb_warning": lambda t: _image_dataset(t, "warn", _png(10_000, 10_000)),
    "broken_png": lambda t: _image_dataset(t, "broken", b"\x89PNG\r\n\x1a\n" + b"junk" * 10),
    "empty_db": lambda t: _write(t / "empty.db", b""),
    "truncated_db": lambda t: _truncated(t / "truncated.db"),
    "foreign_db": lambda t: _sqlite(t / "foreign.db", "accounts", 3),
    "text_db": lambda t: _write(t / "text.db", b"not a database\n"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _expand(arg: str, *, model: Path, tmp: Path) -> str:
    arg = re.sub(r"\{(.)\*(\d+)\}", lambda m: m[1] * int(m[2]), arg)
    arg = re.sub(r"\{file:(\w+)\}", lambda m: str(FILES[m[1]](tmp)), arg)
    return arg.replace("{model}", str(model)).replace("{tmp}", str(tmp))


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_corpus(
    case: dict[str, object],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dataset, "MAX_LINE_BYTES", LINE_CAP)
    config = case.get("config")
    model = write_model(
        tmp_path / "model", {**LLAMA_8B, **(config if isinstance(config, dict) else {})}
    )
    args = [_expand(a, model=model, tmp=tmp_path) for a in case["args"]]  # type: ignore[attr-defined]
    if args[0] == "tune":
        args = tune(Path(args[1]), *args[2:])
    assert_one_error(*run(args, capsys), needle=str(case["error"]))


# --- Hypothesis over option values ----------------------------------------------------------

HOSTILE = st.sampled_from(
    ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1", "0", "-0", "1e30", "9" * 400, "",
     " ", "0x10", "1_000", "1:nan", "inf:1", "0.5:1e400", "²", "\x00", "\x1b[2J", "\u202e1"]
)  # fmt: skip
NUMBERS = st.one_of(
    HOSTILE,
    st.integers(min_value=-(1 << 70), max_value=1 << 70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
TEXT = st.one_of(HOSTILE, st.text(max_size=30), NUMBERS.map(lambda n: f"x={n}"))
NUMERIC_OPTIONS = [
    "--trials", "--timeout", "--seed", "--min-model-len", "--input-len", "--output-len",
    "--num-prompts", "--min-images", "--startup-timeout", "--noise", "--concurrency",
    "--request-rate", "--warmup", "--repeats", "--finalists", "--patience", "--min-improvement",
    "--min-throughput", "--stall-timeout", "--burstiness", "--ramp-up", "--trace-speed",
    "--shared-prefix-len", "--prefix-groups",
]  # fmt: skip
TEXT_OPTIONS = [
    "--gpu-memory-utilization", "--kv-cache-memory-bytes", "--max-num-seqs",
    "--max-num-batched-tokens", "--max-model-len", "--limit-mm-per-prompt", "--image-size",
    "--images-per-request", "--memory-budget", "--slo", "--enqueue", "--gpu", "--tune",
    "--dataset", "--lengths-from", "--trace",
]  # fmt: skip


@FUZZ
@given(option=st.sampled_from(NUMERIC_OPTIONS), value=NUMBERS)
def test_numeric_options(
    option: str, value: str, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_error_at_last(*run(tune(model_dir, option, value), capsys))


@FUZZ
@given(option=st.sampled_from(TEXT_OPTIONS), value=st.one_of(NUMBERS, TEXT))
def test_text_options(
    option: str, value: str, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_error_at_last(*run(tune(model_dir, option, value), capsys))


MODEL_IDS = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="ab/.-_~\x00\x07\n\u202e", max_size=300),
    st.integers(min_value=1, max_value=600).map(lambda n: "a" * n),
    st.integers(min_value=1, max_value=300).map(lambda n: "org/" + "b" * n),
)


@FUZZ
@given(model=MODEL_IDS)
def test_model_ids(model: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_ok_or_one_error(*run(["plan", model, "--gpu", "L4:24"], capsys))


FLAGS = st.sampled_from(
    ["-tp", "-pp", "-O", "-O3", "--compilation-config", "--load-format", "--dtype",
     "--kv-cache-dtype", "--enforce-eager", "--max-num-seq", "--max_num_seqs", "--max-num",
     "--tensor-parallel", "--block-size", "--seed", "--cudagraph-capture-sizes", "--",
     "--enable-prefix-caching", "--quantization"]
)  # fmt: skip
VALUES = st.one_of(NUMBERS, st.sampled_from(["dummy", "auto", "fp8", "half", '{"level": 3}']))


@FUZZ
@given(extra=st.lists(st.one_of(FLAGS, VALUES), max_size=6))
def test_args_after_dashdash(
    extra: list[str], model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_ok_or_one_error(*run(["plan", str(model_dir), "--gpu", "L4:24", "--", *extra], capsys))


CONFIG_KEYS = st.sampled_from(
    ["num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size",
     "head_dim", "vocab_size", "max_position_embeddings", "intermediate_size", "sliding_window",
     "sliding_window_pattern", "num_local_experts", "num_experts_per_tok", "torch_dtype",
     "quantization_config", "architectures", "text_config", "vision_config", "layer_types"]
)  # fmt: skip
CONFIG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 40), max_value=1 << 40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.integers(min_value=-2, max_value=8), max_size=3),
    st.dictionaries(
        st.sampled_from(["bits", "quant_method", "image_size"]), st.integers(), max_size=2
    ),
)


@FUZZ
@given(changes=st.dictionaries(CONFIG_KEYS, CONFIG_VALUES, min_size=1, max_size=3))
def test_config_json(
    changes: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write_model(tmp_path / "fuzzed", {**LLAMA_8B, **changes})
    assert_ok_or_one_error(*run(["plan", str(model), "--gpu", "L4:24", "--json"], capsys))
