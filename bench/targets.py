"""Targets of the benchmarks: each figure printed with its target and whether it was met.

Every benchmark that has a target calls `verdict`; `python -m bench` (make bench) prints
all of them again at the end, one line each, so a long run's outcome is in one place.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

__all__ = ["RESULTS", "Result", "summary", "verdict"]

_OPS = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    op: str
    target: float

    @property
    def met(self) -> bool:
        return _OPS[self.op](self.value, self.target)


RESULTS: list[Result] = []


def verdict(name: str, value: float, op: str, target: float) -> str:
    """'(target >= 0.7: met)' for this figure; remembered for the summary of `python -m bench`."""
    result = Result(name, value, op, target)
    RESULTS.append(result)
    return f"(target {op} {target:g}: {'met' if result.met else 'MISSED'})"


def summary() -> str:
    lines = ["targets:"]
    for r in RESULTS:
        lines.append(f"  {'met   ' if r.met else 'MISSED'}  {r.name:55} {r.value:9.3f}  (target {r.op} {r.target:g})")
    return "\n".join(lines)
