"""Drift tallies: how the scored rows' features fall into the model's training bins.

The jobs are handed the bin edges of every model feature (the model card's training
distribution, read by `models.drift`); `TallyFeatureBins` counts, per bundle, the
assignments of the period being judged into those bins and emits ``(name, count)``
tallies (``drift.<feature>.<bin>`` and ``drift.rows``). The batch job turns them into
Beam counters (the driver reads them after the run: `pipelines.batch`); the streaming job
adds them to its audit tallies, so that each interval's ``run_audit`` row carries the PSI
of that interval's midnight re-scorings (`transforms.audit`). The PSI itself is computed
where the model is known (`models.drift.DriftMonitor`), from `bin_counts`.

Bins are closed on the right: bin i holds edges[i-1] < value <= edges[i] (`bisect_left`).
"""

from __future__ import annotations

import bisect
from typing import Any, Iterable, Mapping, Optional, Sequence

import apache_beam as beam
from apache_beam.transforms import window

from transforms.contracts.outcomes import counter

DRIFT_PREFIX = "drift."
DRIFT_ROWS = DRIFT_PREFIX + "rows"
DAILY = "daily"


def bin_tally_name(feature: str, index: int) -> str:
    return f"{DRIFT_PREFIX}{feature}.{index}"


def bin_counts(counts: Mapping[str, int], edges: Mapping[str, Sequence[float]]) -> dict[str, list[int]]:
    """Tallies (or counters) by name -> per feature, the count of each of its len(edges) + 1 bins."""
    return {feature: [int(counts.get(bin_tally_name(feature, i), 0)) for i in range(len(feature_edges) + 1)]
            for feature, feature_edges in edges.items()}


class TallyFeatureBins(beam.DoFn):
    """Assignments -> ``(tally name, count)`` per bundle: rows judged, and rows per feature bin.

    Which rows are judged: with the side input `as_of_us` (batch), those scored as of it
    (every known user as of the run's "now"); without it (streaming), the midnight
    re-scorings (``scoring`` daily), which score every known user, silent ones included,
    like the training rows. Event-time re-scorings describe only the users who just acted.

    Args:
        edges: per model feature, the ascending upper edges of its training bins.
    """

    def __init__(self, edges: Mapping[str, Sequence[float]]):
        self._edges = {feature: tuple(float(e) for e in feature_edges) for feature, feature_edges in edges.items()}

    def start_bundle(self):
        self._counts: dict[str, int] = {}

    def process(self, assignment: Mapping[str, Any], as_of_us: Optional[int] = None) -> Iterable:
        if as_of_us is not None:
            if int(assignment["as_of_us"]) != as_of_us:
                return ()
        elif assignment.get("scoring") != DAILY:
            return ()
        features = assignment["features"]
        counts = self._counts
        counts[DRIFT_ROWS] = counts.get(DRIFT_ROWS, 0) + 1
        for feature, edges in self._edges.items():
            value = features.get(feature)
            if value is None:
                continue
            name = bin_tally_name(feature, bisect.bisect_left(edges, value))
            counts[name] = counts.get(name, 0) + 1
        return ()

    def finish_bundle(self) -> Iterable:
        for name, n in self._counts.items():
            yield window.GlobalWindows.windowed_value((name, n))


class _IncrementCounter(beam.DoFn):
    def process(self, tally: tuple[str, int]) -> Iterable:
        name, n = tally
        counter(name).inc(n)
        return ()


class CountFeatureBins(beam.PTransform):
    """Batch: the bins of the rows scored as of `as_of_us` as Beam counters (``segments`` namespace).

    Args:
        edges: per model feature, the upper edges of its training bins.
        as_of_us: the one-element PCollection of the run's scoring time (`AsOfMicros`).
    """

    def __init__(self, edges: Mapping[str, Sequence[float]], as_of_us: beam.PCollection):
        super().__init__()
        self._edges = edges
        self._as_of_us = as_of_us

    def expand(self, assignments: beam.PCollection) -> beam.PCollection:
        return (assignments
                | "TallyBins" >> beam.ParDo(TallyFeatureBins(self._edges),
                                            as_of_us=beam.pvalue.AsSingleton(self._as_of_us, default_value=None))
                | "BinCounters" >> beam.ParDo(_IncrementCounter()))
