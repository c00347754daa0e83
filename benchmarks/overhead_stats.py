"""Figures for ``overhead.py``: paired ratios, geometric means, bootstrap intervals, verdicts."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence

Sample = tuple[int, int]
"""(wall ns on the calling thread, process CPU ns over the call and the flush after it)."""

WALL, CPU = 0, 1


def paired_ratios(arm: Sequence[Sample], base: Sequence[Sample], which: int) -> list[float]:
    """``arm / base`` of the same round, one per round."""
    return [a[which] / b[which] for a, b in zip(arm, base, strict=True) if b[which] > 0]


def paired_deltas_ms(
    arm: Sequence[Sample], base: Sequence[Sample], which: int, per: int
) -> list[float]:
    """``(arm - base) / per`` in ms, one per round (``per``: calls in a block)."""
    return [(a[which] - b[which]) / per / 1e6 for a, b in zip(arm, base, strict=True)]


def geomean(values: Sequence[float]) -> float:
    """Geometric mean of positive values (nan if there are none)."""
    logs = [math.log(v) for v in values if v > 0]
    return math.exp(sum(logs) / len(logs)) if logs else math.nan


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[int(0.025 * len(ordered))], ordered[max(int(0.975 * len(ordered)) - 1, 0)]


def geomean_of_medians(
    per_query: Sequence[Sequence[float]], resamples: int, rng: random.Random
) -> tuple[float, float, float]:
    """Geometric mean over queries of each query's median ratio, with a 95 % bootstrap interval.

    The rounds of each query are resampled with replacement.
    """
    point = geomean([statistics.median(r) for r in per_query if r])
    boot = []
    for _ in range(resamples):
        medians = []
        for rounds in per_query:
            if rounds:
                medians.append(statistics.median(rng.choices(rounds, k=len(rounds))))
        boot.append(geomean(medians))
    low, high = _percentiles(boot)
    return point, low, high


def median_ci(
    values: Sequence[float], resamples: int, rng: random.Random
) -> tuple[float, float, float]:
    """Median with a 95 % bootstrap interval."""
    point = statistics.median(values)
    boot = [statistics.median(rng.choices(list(values), k=len(values))) for _ in range(resamples)]
    low, high = _percentiles(boot)
    return point, low, high


def verdict(value: float, target: float) -> str:
    """``met`` / ``not met`` from the measured point figure (``n/a`` when there is none)."""
    if math.isnan(value):
        return "n/a"
    return "met" if value <= target else "not met"


def noisy(control_error: float, margin: float, label: str) -> str:
    """A warning for a verdict when the plain-vs-plain control is off by more than the margin.

    Then the machine's noise is as large as what the target allows, and the verdict says little.
    """
    if control_error > margin:
        return f"; too noisy to judge: the control is off by more than {label}"
    return ""


def pct(ratio: float) -> str:
    """A ratio as a signed percentage."""
    return f"{100 * (ratio - 1):+.1f} %"
