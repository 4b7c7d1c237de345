"""Hostile input is refused before anything starts (issue 16): the arguments after ``--``, the
option ranges, MODEL, ``--gpu`` and the study storage, each with one clear line."""

from __future__ import annotations

import math
import sqlite3
import threading
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from autotune.app.options import LIMITS, TuneOptions, check_model_id
from autotune.cli.main import cli
from autotune.cli.params import Finite
from autotune.engine.safety import (
    KNOWN_FLAGS,
    canonical_flag,
    check_profile_args,
    check_user_args,
    parallel_sizes,
)
from autotune.errors import StorageError, UserError
from autotune.hardware import MAX_GPU_COUNT, MAX_GPU_MEMORY_GIB, parse_gpu_spec
from autotune.search.workers.storage import check_sqlite

# --- arguments after -- -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "spelt"),
    [
        ("--max-num-seq", "--max-num-seqs"),
        ("--max_num_seqs", "--max-num-seqs"),
        ("--gpu-mem", "--gpu-memory-utilization"),
        ("--tensor_parallel", "--tensor-parallel-size"),
        ("--no-enable-prefix", "--no-enable-prefix-caching"),
        ("--some-new-vllm-flag", "--some-new-vllm-flag"),  # unknown: left to vLLM
        ("-tp", "-tp"),
    ],
)
def test_flags_are_spelt_out_as_vllm_reads_them(given: str, spelt: str) -> None:
    assert canonical_flag(given) == spelt


@pytest.mark.parametrize("prefix", ["--max-num", "--kv-cache", "--enable", "--max_num"])
def test_an_ambiguous_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(UserError, match="ambiguous") as err:
        canonical_flag(prefix)
    matches = [f for f in KNOWN_FLAGS if f.startswith(prefix.replace("_", "-"))]
    assert len(matches) > 1 and all(f in str(err.value) for f in sorted(matches)[:4])


def test_user_args_come_back_spelt_out_with_values_untouched() -> None:
    got = check_user_args(["--max_num_seqs=my_value", "--dtype", "half", "-tp", "2", "-O3"])
    assert got == ["--max-num-seqs=my_value", "--dtype", "half", "-tp", "2", "-O3"]
    nargs = ["--cudagraph-capture-sizes", "1", "2", "4", "--seed", "-1", "--enforce-eager"]
    assert check_user_args(nargs) == nargs


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-O", '{"cache_dir": "/etc"}'], "only a plain optimization level 0-3"),
        (["-O4"], "only a plain optimization level 0-3"),
        (["-O.level=3"], "only a plain optimization level 0-3"),
        (["--compilation-config", "{}"], "only a plain optimization level 0-3"),
        (["--compilation-config.mode=3"], "only a plain optimization level 0-3"),
        (["-O"], "only a plain optimization level 0-3"),
        (["--load-format", "dummy"], "--load-format dummy is refused"),
        (["--load-format=DUMMY"], "is refused"),
        (["--load-f", "dummy"], "--load-format dummy is refused"),
        (["other-model"], "positional argument"),
        (["--dtype", "half", "extra"], "positional argument"),
        (["--enforce-eager", "true"], "positional argument"),
        (["--", "--dtype", "half"], "positional argument"),
        (["--dtype", "half\0--trust-remote-code"], "NUL byte"),
        (["-tp", "0"], "-tp 0: expected an integer"),
        (["-tp", "-1"], "-tp -1: expected an integer"),
        (["--tensor-parallel-size=99999"], "expected an integer, 1..1024"),
        (["--pipeline-parallel", "two"], "--pipeline-parallel-size two: expected an integer"),
        (["-tp"], "expected an integer"),
        (["--max-num", "5"], "ambiguous"),
    ],
)
def test_user_args_that_must_not_reach_the_engine(args: list[str], needle: str) -> None:
    with pytest.raises(UserError) as err:
        check_user_args(args)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("level", ["0", "1", "2", "3"])
def test_a_plain_optimization_level_passes(level: str) -> None:
    for args in (["-O", level], [f"-O{level}"], [f"-O={level}"], ["--compilation-config", level]):
        assert check_user_args(args)


def test_a_profile_cannot_carry_what_the_command_line_refuses() -> None:
    check_profile_args({}, ["-O", "3", "--dtype", "half"], source="p.yaml")
    for extra, needle in (
        (["-O", '{"debug_dump_path": "/tmp/x"}'], "only a plain optimization level"),
        (["--load-format", "dummy"], "is refused"),
        (["--enforce-eager", "other-model"], "positional argument"),
        (["-tp", "0"], "expected an integer"),
    ):
        with pytest.raises(UserError, match=needle) as err:
            check_profile_args({}, extra, source="p.yaml")
        assert str(err.value).startswith("p.yaml: extra_args") or "expected" in str(err.value)
    with pytest.raises(UserError, match="outside vLLM's limits"):
        check_profile_args({"max_num_seqs": 1 << 60}, [], source="p.yaml")


def test_parallel_sizes_read_abbreviations_too() -> None:
    assert parallel_sizes(["--tensor-parallel", "2", "--pipeline_parallel_size=3"]) == {
        "tensor_parallel_size": 2,
        "pipeline_parallel_size": 3,
    }


def test_tuned_flags_after_dashdash_are_refused_however_spelt(model_dir: Path) -> None:
    from autotune.app.prepare import prepare

    for extra in (["--max-num-seq", "5"], ["--max_num_seqs=5"], ["--gpu-memory-util", "0.5"]):
        options = TuneOptions(model=str(model_dir), gpu="L4:24", extra_args=tuple(extra))
        with pytest.raises(UserError, match="after --: give it as an autotune option"):
            prepare(options)


# --- options: finite and in their documented range ------------------------------------------


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400"])
def test_finite_refuses_nan_and_infinity(text: str) -> None:
    with pytest.raises(click.BadParameter, match="not a finite number"):
        Finite().convert(text, None, None)
    assert Finite(0, None).convert("1e300", None, None) == 1e300
    with pytest.raises(click.BadParameter, match="not in the range"):
        Finite(0, None).convert("-inf", None, None)


def test_help_shows_each_range() -> None:
    out = CliRunner().invoke(cli, ["tune", "--help"], terminal_width=200).output
    for flag, name in (("--trials", "trials"), ("--seed", "seed"), ("--noise", "noise")):
        high = LIMITS[name][1]
        block = out.split(flag, 1)[1].split("\n  -", 1)[0]
        assert f"<=x<={high:g}" in " ".join(block.split()) or f"<=x<={int(high)}" in block


@pytest.mark.parametrize(
    "changes",
    [
        {"trials": 0},
        {"trials": 10**9},
        {"seed": -1},
        {"timeout_s": math.nan},
        {"noise": math.inf},
        {"startup_timeout_s": 0.5},
        {"model": "a" * 300},
        {"extra_args": ("-tp", "0")},
    ],
)
def test_library_callers_get_the_same_checks(changes: dict[str, object]) -> None:
    options = TuneOptions(**{"model": "org/name", **changes})  # type: ignore[arg-type]
    with pytest.raises(UserError):
        options.check()


def test_good_options_pass_the_check_with_flags_spelt_out() -> None:
    checked = TuneOptions(model="org/name", extra_args=("--kv_cache_dtype", "fp8")).check()
    assert checked.extra_args == ("--kv-cache-dtype", "fp8")


# --- MODEL and --gpu --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("", "expected a model directory"),
        ("org/na\x1bme", "expected a model directory"),
        ("a" * 300, "too long for a path"),
        ("org/" + "b" * 97, "no Hugging Face id"),
        ("/" + "c/" * 2100, "too long"),
        ("has space", "no Hugging Face id"),
    ],
)
def test_model_ids(model: str, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        check_model_id(model)


def test_good_model_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my model").mkdir()
    monkeypatch.chdir(tmp_path)
    for model in ("meta-llama/Llama-3.1-8B", "gpt2", "./x", "/abs/path", "my model"):
        assert check_model_id(model) == model


@pytest.mark.parametrize(
    "spec",
    [
        "L4:" + "9" * 400,
        f"L4:{MAX_GPU_MEMORY_GIB + 1}",
        f"L4:24x{MAX_GPU_COUNT + 1}",
        "L4:0",
        "L4:24x0",
        "L4\x07:24",
        "x" * 101 + ":24",
    ],
)
def test_gpu_specs_out_of_range(spec: str) -> None:
    with pytest.raises(UserError, match="invalid GPU spec") as err:
        parse_gpu_spec(spec, source="flag")
    assert len(str(err.value)) < 200


# --- the study storage ------------------------------------------------------------------------


def _db(path: Path, *tables: str) -> str:
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 1")  # written even without tables
    for table in tables:
        db.execute(f"CREATE TABLE {table} (id INTEGER)")
    db.commit()
    db.close()
    return f"sqlite:///{path}"


def test_storage_files_that_are_no_study_database(tmp_path: Path) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    (tmp_path / "text.db").write_text("hello")
    cases = {
        f"sqlite:///{tmp_path / 'empty.db'}": "is an empty file",
        f"sqlite:///{tmp_path / 'text.db'}": "is not a SQLite database",
        _db(tmp_path / "foreign.db", "accounts"): "another program's SQLite database",
        f"sqlite:///{tmp_path / 'no-dir' / 'x.db'}": "does not exist",
        f"sqlite:///{tmp_path}": "not a regular file",
    }
    for url, needle in cases.items():
        with pytest.raises(StorageError, match=needle):
            check_sqlite(url)
    with pytest.raises(StorageError, match="the database file does not exist"):
        check_sqlite(f"sqlite:///{tmp_path / 'missing.db'}", must_exist=True)


def test_storage_files_that_may_be_used(tmp_path: Path) -> None:
    check_sqlite(f"sqlite:///{tmp_path / 'new.db'}")  # created by Optuna
    check_sqlite(_db(tmp_path / "blank.db"))  # SQLite without tables
    check_sqlite(_db(tmp_path / "study.db", "studies", "version_info"))
    (tmp_path / "racing.db").write_bytes(b"")  # another process is creating it right now
    (tmp_path / "racing.db-journal").write_bytes(b"x")
    check_sqlite(f"sqlite:///{tmp_path / 'racing.db'}")
    check_sqlite("postgresql://u:p@host/db")  # not a file: its server answers


def test_an_empty_file_that_becomes_a_study_database_is_used(tmp_path: Path) -> None:
    """Tuners sharing a new SQLite storage: one has created the file (zero bytes, its journal
    not yet written) when another checks it. The check waits for it to settle (seen in CI:
    three tuners on one storage, one refused the file as empty)."""
    racing = tmp_path / "racing.db"
    racing.write_bytes(b"")
    timer = threading.Timer(0.5, lambda: _db(tmp_path / "racing.db", "studies"))
    timer.start()
    try:
        check_sqlite(f"sqlite:///{racing}")
    finally:
        timer.join()


def test_a_truncated_study_database_is_refused(tmp_path: Path) -> None:
    url = _db(tmp_path / "whole.db", *(f"t{i}" for i in range(20)), "studies")
    whole = (tmp_path / "whole.db").read_bytes()
    (tmp_path / "cut.db").write_bytes(whole[: len(whole) // 2])
    check_sqlite(url)
    with pytest.raises(StorageError, match="is truncated"):
        check_sqlite(f"sqlite:///{tmp_path / 'cut.db'}")
