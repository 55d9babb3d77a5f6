"""Drift tallies: assignments counted into the training bins (TestPipeline), and the streaming audit row's PSI."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from models.drift import DriftMonitor, training_distribution
from tests.support.psi import counts_by_comparison, psi_of_shares
from transforms.audit import interval_audit_row
from transforms.drift import DRIFT_ROWS, TallyFeatureBins, bin_counts, bin_tally_name

EDGES = {"a": (1.0, 2.0), "b": (0.0,)}


def _assignment(as_of_us, scoring, a, b):
    return {"user_key": "u", "as_of_us": as_of_us, "scoring": scoring, "features": {"a": a, "b": b}}


ROWS = [
    _assignment(100, "daily", 1.0, 0.0),   # a bin 0 (<= 1), b bin 0 (<= 0)
    _assignment(100, "daily", 1.5, 3.0),   # a bin 1, b bin 1
    _assignment(100, "daily", 2.5, -1.0),  # a bin 2, b bin 0
    _assignment(90, "daily", 0.0, 0.0),    # an earlier midnight
    _assignment(100, "event", 9.0, 9.0),   # an event-time re-scoring
]


def _summed(tallies):
    return tallies | beam.CombinePerKey(sum)


def test_streaming_tallies_count_the_midnight_rescorings_into_right_closed_bins():
    with TestPipeline() as p:
        tallies = p | beam.Create(ROWS) | beam.ParDo(TallyFeatureBins(EDGES))
        assert_that(_summed(tallies), equal_to([
            (DRIFT_ROWS, 4), (bin_tally_name("a", 0), 2), (bin_tally_name("a", 1), 1), (bin_tally_name("a", 2), 1),
            (bin_tally_name("b", 0), 3), (bin_tally_name("b", 1), 1)]))


def test_batch_tallies_count_the_rows_as_of_the_runs_time():
    with TestPipeline() as p:
        as_of = p | "AsOf" >> beam.Create([100])
        tallies = p | beam.Create(ROWS) | beam.ParDo(TallyFeatureBins(EDGES), as_of_us=beam.pvalue.AsSingleton(as_of))
        assert_that(_summed(tallies), equal_to([
            (DRIFT_ROWS, 4), (bin_tally_name("a", 0), 1), (bin_tally_name("a", 1), 1), (bin_tally_name("a", 2), 2),
            (bin_tally_name("b", 0), 2), (bin_tally_name("b", 1), 2)]))


def test_an_interval_row_records_the_psi_of_its_midnight_rescorings():
    rng = np.random.default_rng(3)
    training = rng.normal(0, 1, (500, 2))
    monitor = DriftMonitor(training_distribution(training, ["a", "b"]), ["a", "b"])
    now = np.column_stack([rng.normal(0, 1, 200), rng.normal(1, 1, 200)])
    counts = {"read": 7, DRIFT_ROWS: 200}
    for i, name in enumerate("ab"):
        for j, n in enumerate(counts_by_comparison(now[:, i].tolist(), monitor.edges[name])):
            if n:
                counts[bin_tally_name(name, j)] = n
    row = interval_audit_row(counts, "stream-1", "projects/p/subscriptions/s", "m1", monitor)
    expected = {name: psi_of_shares(monitor.expected[name], counts_by_comparison(now[:, i].tolist(),
                                                                                 monitor.edges[name]))
                for i, name in enumerate("ab")}
    assert row["drift_rows"] == 200
    assert [d["feature"] for d in row["drift"]] == ["b", "a"]
    assert [d["psi"] for d in row["drift"]] == pytest.approx([expected["b"], expected["a"]])
    assert row["drift_max_psi"] == pytest.approx(expected["b"])
    assert bin_counts(counts, monitor.edges)["a"] == counts_by_comparison(now[:, 0].tolist(), monitor.edges["a"])
    # An interval without midnight re-scorings records no drift.
    quiet = interval_audit_row({"read": 7}, "stream-1", "projects/p/subscriptions/s", "m1", monitor)
    assert (quiet["drift_rows"], quiet["drift_max_psi"], quiet["drift"]) == (None, None, [])
