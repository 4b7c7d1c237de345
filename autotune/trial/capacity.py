"""Capacity under SLOs: the highest request rate a running engine serves within every SLO.

The records here are stored with the trial (``TrialRecord.capacity``) and the profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autotune.errors import UserError
from autotune.load.metrics import Metrics


@dataclass(frozen=True)
class RatePoint:
    """One load step of a capacity search: the offered rate and what it measured."""

    rate: float
    """Offered requests per second."""
    metrics: Metrics
    met: bool
    """Every SLO met at this rate."""
    saturated: bool = False
    """Stopped early: the queue grew without bound (over-saturated)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "met": self.met,
            "saturated": self.saturated,
            "metrics": self.metrics.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RatePoint:
        try:
            return cls(
                rate=float(d["rate"]),
                metrics=Metrics.from_dict(d["metrics"]),
                met=bool(d["met"]),
                saturated=bool(d.get("saturated", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"capacity: bad rate point ({exc})") from None


@dataclass(frozen=True)
class Capacity:
    """The result of one capacity search on one engine."""

    rate: float | None
    """The highest offered rate (requests/s) that met every SLO; None if none did."""
    points: tuple[RatePoint, ...] = ()
    """Every load step, in the order run."""

    @property
    def at_capacity(self) -> RatePoint | None:
        """The measured step at the capacity rate."""
        return next((p for p in self.points if p.rate == self.rate and p.met), None)

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "points": [p.to_dict() for p in self.points]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Capacity:
        rate = d.get("rate")
        points = d.get("points") or []
        if not isinstance(points, list):
            raise UserError("capacity: points must be a list")
        return cls(
            rate=None if rate is None else float(rate),
            points=tuple(RatePoint.from_dict(p) for p in points),
        )
