"""``autotune trials`` and ``profiles list`` fit the terminal: at 80 columns they keep #, the
outcome, every tuned value and tok/s (the rest is left out, and said so), and ``--json`` parses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from autotune.profiles.store import ProfileStore
from autotune.report.columns import Column, FittedTable
from autotune.report.progress import trials_table
from autotune.search import study as st
from tests.conftest import run_autotune
from tests.profiles.test_store import make
from tests.report.recorded import LONG_REASON, MODEL, NAME, PLAN, record_study

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    record_study(f"sqlite:///{state / 'studies.db'}", state / "logs" / "m")
    return state


def table_lines(text: str) -> list[list[str]]:
    """The cells of each row of a boxed table (header included)."""
    return [
        [cell.strip() for cell in line.strip("┃│").split(line[0])]
        for line in text.splitlines()
        if line[:1] in ("┃", "│")
    ]


def widest(text: str) -> int:
    return max(len(line.rstrip()) for line in text.splitlines())


def test_trials_at_80_columns_keep_the_numbers_outcomes_values_and_tok_s(state: Path) -> None:
    done = run_autotune("trials", MODEL, "--state-dir", state, env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert widest(done.stdout) <= 80
    header, *rows = table_lines(done.stdout)
    assert header[:7] == ["#", "outcome", "util", "seqs", "batched", "len", "tok/s"]
    assert len(rows) == len(PLAN)
    for number, ((outcome, tput, _), row) in enumerate(zip(PLAN, rows, strict=True)):
        assert row[0].rstrip("*") == str(number) and row[1] == outcome.value
        assert row[6] == (f"{tput:.1f}" if tput else "")
        assert all(row[2:6])  # every tuned value shown, none cut
    assert [r[0] for r in rows if r[0].endswith("*")] == ["4*"]  # the chosen trial
    assert "left out at 80 columns: " in done.stdout and "reason" in done.stdout


def test_a_wide_terminal_shows_source_reason_and_log(state: Path) -> None:
    done = run_autotune("trials", "--state-dir", state, env={"COLUMNS": "240"})
    assert done.returncode == 0, done.stderr
    header, *rows = table_lines(done.stdout)
    for name in ("source", "reason", "log", "KV peak %", "preempt", "TTFT p95"):
        assert name in header
    source, reason, log = (header.index(n) for n in ("source", "reason", "log"))
    assert [r[source] for r in rows] == [
        "vllm-defaults", "tpe", "tpe", "edge", "tpe", "re-measure 4",
    ]  # fmt: skip
    assert rows[1][reason].startswith(LONG_REASON.split(": ", 1)[1][:20])  # the class dropped
    assert rows[3][reason] == "KV cache fits max_model_len <= 4096"
    assert [r[log] for r in rows] == [f"trial-{n:04d}.log" for n in range(len(PLAN))]
    assert f"logs in {state / 'logs' / 'm'}" in done.stdout
    assert "left out" not in done.stdout


def test_trials_json_has_every_field(state: Path) -> None:
    done = run_autotune("trials", MODEL, "--state-dir", state, "--json", env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)[NAME]
    assert [r["number"] for r in rows] == list(range(len(PLAN)))
    assert rows[1]["reason"] == LONG_REASON and rows[5]["source"] == "re-measure of trial 4"
    assert rows[0]["log"] == str(state / "logs" / "m" / "trial-0000.log")


def joined(text: str, rule: str) -> list[list[str]]:
    """The cells of a table whose cells wrap: the lines of each row (or of the header, whose
    cells are between ``rule``) joined per column."""
    out: list[list[str]] = []
    for line in text.splitlines():
        if line[:1] != rule:
            continue
        cells = [c.strip() for c in line.strip(rule).split(rule)]
        if not out or (rule == "│" and cells[0]):
            out.append(cells)
        else:
            out[-1] = [a + b for a, b in zip(out[-1], cells, strict=True)]
    return out


@pytest.mark.parametrize("width", [40, 50, 60, 80, 100, 140, 200, 300])
def test_kept_columns_survive_every_width(state: Path, width: int) -> None:
    study = st.load_study(NAME, f"sqlite:///{state / 'studies.db'}")
    console = Console(record=True, width=width)
    console.print(trials_table(st.trial_rows(study.trials), best=4, title=NAME))
    text = console.export_text()
    assert widest(text) <= width
    (header,) = joined(text, "┃")  # a header may wrap below 80 columns, never disappears
    assert header[:7] == ["#", "outcome", "util", "seqs", "batched", "len", "tok/s"]
    rows = joined(text, "│")
    assert [r[1] for r in rows] == [outcome.value for outcome, _, _ in PLAN]
    assert [r[6] for r in rows] == [f"{tput:.1f}" if tput else "" for _, tput, _ in PLAN]
    if width >= 80:  # nothing kept wraps
        assert len(table_lines(text)) == 1 + len(PLAN)


def test_columns_are_left_out_in_the_given_order() -> None:
    columns = [Column(name="k", keep=True), *(Column(name=c) for c in "abc")]
    table = FittedTable(title="t", columns=columns, rows=[("1" * 10, "2" * 10, "3" * 10, "4" * 10)],
                        drop=("c", "a", "b"))  # fmt: skip
    full = 4 * 13 + 1
    for width, shown in ((full, "kabc"), (full - 1, "kab"), (full - 14, "kb"), (20, "k")):
        indices, _ = table.shown(width=width)
        assert "".join(columns[i].name for i in indices) == shown, width


def test_a_reason_is_squeezed_before_it_is_left_out() -> None:
    columns = [Column(name="k", keep=True), Column(name="reason", flexible=True, max_width=60)]
    table = FittedTable(title="t", columns=columns, rows=[("1" * 10, "r" * 100)], drop=["reason"])
    assert table.shown(width=200) == ([0, 1], {})
    assert table.shown(width=14 + 3 + 20) == ([0, 1], {1: 20})
    assert table.shown(width=14 + 3 + 10) == ([0], {})
    console = Console(record=True, width=37)
    console.print(table)
    assert "r" * 19 + "…" in console.export_text()


def test_profiles_list_at_80_columns_and_as_json(tmp_path: Path) -> None:
    root = tmp_path / "profiles"
    store = ProfileStore(root)
    saved = [store.save(make(f"2026-0{i}-01T00:00:00+00:00", workload=w))
             for i, w in ((1, "in128-out32"), (2, "in512-out128-img2-448x448"))]  # fmt: skip
    done = run_autotune("profiles", "list", "--profiles-dir", root, env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert widest(done.stdout) <= 80
    header, *rows = table_lines(done.stdout)
    assert header[:4] == ["model", "hardware", "workload", "tok/s"]
    assert sorted(r[2] for r in rows) == ["in128-out32", "in512-out128-img2-448x448"]
    assert all(r[3] == "1000.0" and r[1] == "l4-24gib-x1" for r in rows)
    listed = run_autotune("profiles", "list", "--profiles-dir", root, "--json")
    data = json.loads(listed.stdout)
    assert sorted(d["path"] for d in data) == sorted(map(str, saved))
    assert {d["output_throughput"] for d in data} == {1000.0}
    assert all((root / d["file"]).is_file() for d in data)
    empty = run_autotune("profiles", "list", "--profiles-dir", tmp_path / "none", "--json")
    assert empty.returncode == 0 and json.loads(empty.stdout) == []
