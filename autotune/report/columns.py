"""Tables that fit the terminal: the columns that matter are kept at any width, the others are
left out in a given order (and said so under the table); what still does not fit wraps.

Cells are plain strings shown as ``Text`` (never parsed as rich markup)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

MIN_FLEX = 16  # a flexible column (a reason) narrower than this is left out instead


@dataclass(frozen=True, kw_only=True)
class Column:
    """A column: ``keep`` ones are never left out; ``flexible`` ones take the width left
    (at most ``max_width``) and end in an ellipsis."""

    name: str
    justify: Literal["left", "right"] = "right"
    keep: bool = False
    flexible: bool = False
    max_width: int | None = None


def _natural(column: Column, cells: Sequence[str]) -> int:
    width = max([cell_len(column.name), *(cell_len(c) for c in cells)])
    return min(width, column.max_width) if column.max_width else width


def _total(widths: Sequence[int]) -> int:
    """A boxed table's width: one space of padding each side, one rule between and around."""
    return sum(widths) + 3 * len(widths) + 1


@dataclass(frozen=True, kw_only=True)
class FittedTable:
    """A rich renderable: the table laid out for the width it is printed at. ``drop`` names
    the columns to leave out first, in order; ``notes`` go under the table."""

    title: str
    columns: Sequence[Column]
    rows: Sequence[Sequence[str]]
    drop: Sequence[str] = ()
    notes: Sequence[str] = ()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(width=options.max_width)

    def shown(self, *, width: int) -> tuple[list[int], dict[int, int]]:
        """The indices of the columns shown at ``width`` and the widths of flexible ones."""
        cells = [[row[i] for row in self.rows] for i in range(len(self.columns))]
        widths = [_natural(c, cells[i]) for i, c in enumerate(self.columns)]
        shown = list(range(len(self.columns)))
        squeezed: dict[int, int] = {}
        by_name = {c.name: i for i, c in enumerate(self.columns)}
        for name in self.drop:
            i = by_name.get(name)
            if i is None or self.columns[i].keep or i not in shown:
                continue
            if _total([widths[j] for j in shown]) <= width:
                break
            rest = _total([widths[j] for j in shown if j != i]) + 3
            if self.columns[i].flexible and width - rest >= MIN_FLEX:
                squeezed[i] = width - rest
                break
            shown.remove(i)
        return shown, squeezed

    def table(self, *, width: int) -> Table:
        shown, squeezed = self.shown(width=width)
        cells = [[row[i] for row in self.rows] for i in range(len(self.columns))]
        fits = _total([squeezed.get(i, _natural(self.columns[i], cells[i])) for i in shown])
        fits = fits <= width
        left_out = [c.name for i, c in enumerate(self.columns) if i not in shown]
        notes = list(self.notes)
        if left_out:
            notes.append(
                f"left out at {width} columns: {', '.join(left_out)} (a wider terminal, or --json)"
            )
        table = Table(
            title=Text(self.title),
            title_justify="left",
            caption=Text("\n".join(notes)) if notes else None,
            caption_justify="left",
        )
        for i in shown:
            col = self.columns[i]
            if col.flexible:
                most = squeezed.get(i, col.max_width)
                table.add_column(col.name, overflow="ellipsis", no_wrap=True, max_width=most)
            else:  # numbers and names stay whole while they fit; then they wrap
                overflow: Literal["fold", "ellipsis"] = "ellipsis" if fits else "fold"
                table.add_column(
                    col.name,
                    justify=col.justify,
                    no_wrap=fits,
                    overflow=overflow,
                    max_width=col.max_width,
                )
        for row in self.rows:
            table.add_row(*(Text(row[i]) for i in shown))
        return table
