"""The run summary: what became of every record read, and of every row written; whether that adds up.

Built from the pipeline's Beam counters (namespace `segments`), so the same
numbers are visible in the Dataflow console. Every input record has one fate:

    read == valid + sum(dead_lettered) + sum(filtered) + duplicates

`valid` counts the events that reached segmentation: unique, consented,
unsuppressed and on time (`dedupe.out` minus the `too_late` dead letters).
`dead_lettered` holds the event-level codes; rows derived from valid events that
failed later (inference, warehouse schema or load) are in `rows_dead_lettered`,
apart, since their events are already counted as valid.

And every row produced reached the warehouse, or is said to be elsewhere (`writes`,
one entry per table, from the `bigquery.<table>.*` counters, `WriteCount`):

    segment_assignments: produced == written + dead_lettered      (refused rows are dead letters)
    segment_changes:     produced == written + dead_lettered      (likewise)
    dead_letters:        produced == written + kept_in_fallback   (refused ones are in the fallback folder)

`produced` is what the job made (assignments counted by the model handler, changes by
the change detection, every dead letter of every code), `written` what the loads put in the table. A load that failed
after its retries leaves its rows dead-lettered or in the fallback folder: the counts
still add up, but the run is not `complete`, and fails (`check`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Mapping, Optional

from apache_beam.metrics.metric import MetricsFilter

from transforms.bigquery.tables import Table
from transforms.contracts.outcomes import (ASSIGNMENTS, CHANGES, DEAD_LETTER_PREFIX, EVENT_LEVEL_CODES,
                                           FILTERED_PREFIX, METRICS_NAMESPACE, READ, ROW_LEVEL_CODES, ErrorCode,
                                           FilterReason, WriteCount, write_counter_name)
from transforms.ingest.dedupe import DEDUPE_IN, DEDUPE_OUT


class ReconciliationError(RuntimeError):
    """The counts do not add up: some record met no fate, or two."""


class WriteFailure(RuntimeError):
    """Rows the job produced did not all reach the warehouse (they are kept elsewhere, or lost)."""


@dataclasses.dataclass
class TableWrites:
    """What became of the rows one warehouse table was handed."""

    produced: int  # what the job made for this table
    handed: int  # rows given to the write (== produced unless something vanished on the way)
    written: int  # loaded into the table
    rejected: int  # refused by the schema check
    load_failed: int  # in loads that failed after their retries
    dead_lettered: int  # refused rows turned into dead letters
    kept_in_fallback: int  # refused rows written to the fallback folder

    @property
    def refused(self) -> int:
        return self.rejected + self.load_failed

    @property
    def reconciled(self) -> bool:
        return (self.produced == self.handed == self.written + self.refused
                and self.refused == self.dead_lettered + self.kept_in_fallback)

    @property
    def complete(self) -> bool:
        """Everything reached the warehouse, refusals of the schema check as dead letters."""
        return self.reconciled and self.load_failed == 0 and self.kept_in_fallback == 0

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "reconciled": self.reconciled}


def writes_from_counters(counters: Mapping[str, int]) -> dict[str, TableWrites]:
    """The `TableWrites` of the assignments and dead letters (empty when the job wrote nothing)."""
    def get(table: Table, count: WriteCount) -> int:
        return int(counters.get(write_counter_name(table.value, count), 0))

    every_dead_letter = sum(int(counters.get(DEAD_LETTER_PREFIX + code.value, 0)) for code in ErrorCode)
    produced = {Table.SEGMENT_ASSIGNMENTS: int(counters.get(ASSIGNMENTS, 0)),
                Table.SEGMENT_CHANGES: int(counters.get(CHANGES, 0)),
                Table.DEAD_LETTERS: every_dead_letter}
    writes = {}
    for table, made in produced.items():
        writes[table.value] = TableWrites(
            produced=made, handed=get(table, WriteCount.ROWS), written=get(table, WriteCount.LOADED),
            rejected=get(table, WriteCount.REJECTED), load_failed=get(table, WriteCount.LOAD_FAILED),
            dead_lettered=get(table, WriteCount.DEAD_LETTERED),
            kept_in_fallback=get(table, WriteCount.FALLBACK))
    return writes


@dataclasses.dataclass
class RunSummary:
    read: int
    valid: int
    duplicates: int
    filtered: dict[str, int]
    dead_lettered: dict[str, int]
    rows_dead_lettered: dict[str, int] = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)
    writes: dict[str, TableWrites] = dataclasses.field(default_factory=dict)  # empty: not checked
    fallback: Optional[str] = None  # where refused dead letters (and audit rows) are kept

    @classmethod
    def from_counters(cls, counters: Mapping[str, int], extra: Optional[dict] = None,
                      with_writes: bool = False, fallback: Optional[str] = None) -> "RunSummary":
        dead = {code.value: int(counters.get(DEAD_LETTER_PREFIX + code.value, 0)) for code in EVENT_LEVEL_CODES}
        rows_dead = {code.value: int(counters.get(DEAD_LETTER_PREFIX + code.value, 0)) for code in ErrorCode
                     if code in ROW_LEVEL_CODES}
        filtered = {reason.value: int(counters.get(FILTERED_PREFIX + reason.value, 0)) for reason in FilterReason}
        unique = int(counters.get(DEDUPE_OUT, 0))
        return cls(
            read=int(counters.get(READ, 0)),
            valid=unique - dead[ErrorCode.TOO_LATE.value],
            duplicates=int(counters.get(DEDUPE_IN, 0)) - unique,
            filtered=filtered,
            dead_lettered=dead,
            rows_dead_lettered=rows_dead,
            extra=dict(extra or {}),
            writes=writes_from_counters(counters) if with_writes else {},
            fallback=fallback,
        )

    @property
    def accounted(self) -> int:
        return self.valid + sum(self.dead_lettered.values()) + sum(self.filtered.values()) + self.duplicates

    @property
    def fates_reconciled(self) -> bool:
        """Every record read met exactly one fate."""
        return self.read == self.accounted

    @property
    def writes_reconciled(self) -> bool:
        """Every row produced is in its table, a dead letter, or the fallback folder."""
        return all(w.reconciled for w in self.writes.values())

    @property
    def reconciled(self) -> bool:
        return self.fates_reconciled and self.writes_reconciled

    @property
    def complete(self) -> bool:
        """Reconciled, and nothing was refused by a failed load (all is in the warehouse)."""
        return self.reconciled and all(w.complete for w in self.writes.values())

    @property
    def status(self) -> str:
        return "succeeded" if self.complete else "failed"

    def to_json(self) -> dict:
        out = {
            "read": self.read,
            "valid": self.valid,
            "duplicates": self.duplicates,
            "filtered": dict(self.filtered),
            "dead_lettered": dict(self.dead_lettered),
            "rows_dead_lettered": dict(self.rows_dead_lettered),
            "reconciled": self.reconciled,
            **self.extra,
        }
        if self.writes:
            out["writes"] = {table: w.to_json() for table, w in self.writes.items()}
            out["complete"] = self.complete
            out["fallback"] = self.fallback
        return out

    def write(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_json(), handle, indent=2, sort_keys=True)
            handle.write("\n")

    def console_line(self) -> str:
        dead = sum(self.dead_lettered.values())
        filtered = sum(self.filtered.values())
        gap = self.read - self.accounted
        verdict = "reconciled" if self.fates_reconciled else f"NOT RECONCILED ({gap:+d} unaccounted)"
        return (f"read {self.read:,} = valid {self.valid:,} + dead-lettered {dead:,} + filtered {filtered:,}"
                f" + duplicates {self.duplicates:,}: {verdict}")

    def writes_line(self) -> Optional[str]:
        """One line on what reached the warehouse (None when writes were not counted)."""
        if not self.writes:
            return None
        parts = []
        for table, name in ((Table.SEGMENT_ASSIGNMENTS, Table.SEGMENT_ASSIGNMENTS.value),
                            (Table.SEGMENT_CHANGES, "changes"), (Table.DEAD_LETTERS, "dead letters")):
            w = self.writes.get(table.value)
            if w is None:
                continue
            text = f"{name}: wrote {w.written:,} of {w.produced:,}"
            if w.dead_lettered:
                text += f", {w.dead_lettered:,} refused and dead-lettered"
            if w.kept_in_fallback:
                text += f", {w.kept_in_fallback:,} refused and kept in {self.fallback}"
            lost = w.produced - w.written - w.dead_lettered - w.kept_in_fallback
            if lost:
                text += f", {lost:,} UNACCOUNTED FOR"
            parts.append(text)
        if self.complete:
            verdict = "all written"
        elif not self.writes_reconciled:
            verdict = "NOT RECONCILED"
        else:
            verdict = "NOT ALL WRITTEN"
        return "; ".join(parts) + f": {verdict}"

    def drift_line(self) -> Optional[str]:
        """One line on the drift the run recorded in run_audit (None when the model card has no bins)."""
        from models.drift import MAJOR, flag

        drift = self.extra.get("drift")
        if not drift:
            return None
        if not drift.get("drift_rows"):
            return "drift: no row scored as of the run's as-of time to compare with the training data"
        top = drift["drift"][0] if drift.get("drift") else {}
        return (f"drift: largest population stability index {drift['drift_max_psi']:.3f} ({top.get('feature')}) "
                f"over {drift['drift_rows']:,} users against the training data: {flag(drift['drift_max_psi'])} "
                f"(alert above {MAJOR})")

    def check(self) -> None:
        """Raises when a record met no fate (or two), or a produced row is not in the warehouse.

        Raises:
          ReconciliationError: the fates or the writes do not add up.
          WriteFailure: loads failed after their retries; the message says what and where it is kept.
        """
        if not self.fates_reconciled:
            raise ReconciliationError(
                f"run summary does not reconcile: read {self.read} != valid {self.valid} + dead-lettered "
                f"{sum(self.dead_lettered.values())} + filtered {sum(self.filtered.values())} + duplicates "
                f"{self.duplicates}")
        if not self.writes_reconciled:
            raise ReconciliationError(f"the writes do not reconcile: {self.writes_line()}")
        if not self.complete:
            raise WriteFailure(f"not everything reached the warehouse: {self.writes_line()}")


def counters_of(result) -> dict[str, int]:
    """The `segments` counters of a finished pipeline, summed over steps."""
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    totals: dict[str, int] = {}
    for metric in query["counters"]:
        value = metric.committed if metric.committed is not None else metric.attempted
        totals[metric.key.metric.name] = totals.get(metric.key.metric.name, 0) + int(value or 0)
    return totals
