"""The run summary: what became of every record read, and whether that adds up.

Built from the pipeline's Beam counters (namespace `segments`), so the same
numbers are visible in the Dataflow console. Every input record has one fate:

    read == valid + sum(dead_lettered) + sum(filtered) + duplicates

`valid` counts the events that reached segmentation: unique, consented,
unsuppressed and on time (`dedupe.out` minus the `too_late` dead letters).
`dead_lettered` holds the event-level codes; rows derived from valid events that
failed later (inference, warehouse schema) are in `rows_dead_lettered`, apart,
since their events are already counted as valid.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Mapping, Optional

from apache_beam.metrics.metric import MetricsFilter

from transforms.ingest.dedupe import DEDUPE_IN, DEDUPE_OUT
from transforms.contracts.outcomes import (DEAD_LETTER_PREFIX, EVENT_LEVEL_CODES, FILTERED_PREFIX, METRICS_NAMESPACE, READ,
                                ROW_LEVEL_CODES, ErrorCode, FilterReason)


class ReconciliationError(RuntimeError):
    """The counts do not add up: some record met no fate, or two."""


@dataclasses.dataclass
class RunSummary:
    read: int
    valid: int
    duplicates: int
    filtered: dict[str, int]
    dead_lettered: dict[str, int]
    rows_dead_lettered: dict[str, int] = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_counters(cls, counters: Mapping[str, int], extra: Optional[dict] = None) -> "RunSummary":
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
        )

    @property
    def accounted(self) -> int:
        return self.valid + sum(self.dead_lettered.values()) + sum(self.filtered.values()) + self.duplicates

    @property
    def reconciled(self) -> bool:
        return self.read == self.accounted

    def to_json(self) -> dict:
        return {
            "read": self.read,
            "valid": self.valid,
            "duplicates": self.duplicates,
            "filtered": dict(self.filtered),
            "dead_lettered": dict(self.dead_lettered),
            "rows_dead_lettered": dict(self.rows_dead_lettered),
            "reconciled": self.reconciled,
            **self.extra,
        }

    def write(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_json(), handle, indent=2, sort_keys=True)
            handle.write("\n")

    def console_line(self) -> str:
        dead = sum(self.dead_lettered.values())
        filtered = sum(self.filtered.values())
        verdict = "reconciled" if self.reconciled else f"NOT RECONCILED ({self.read - self.accounted:+d} unaccounted)"
        return (f"read {self.read:,} = valid {self.valid:,} + dead-lettered {dead:,} + filtered {filtered:,}"
                f" + duplicates {self.duplicates:,}: {verdict}")

    def check(self) -> None:
        if not self.reconciled:
            raise ReconciliationError(
                f"run summary does not reconcile: read {self.read} != valid {self.valid} + dead-lettered "
                f"{sum(self.dead_lettered.values())} + filtered {sum(self.filtered.values())} + duplicates "
                f"{self.duplicates}")


def counters_of(result) -> dict[str, int]:
    """The `segments` counters of a finished pipeline, summed over steps."""
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    totals: dict[str, int] = {}
    for metric in query["counters"]:
        value = metric.committed if metric.committed is not None else metric.attempted
        totals[metric.key.metric.name] = totals.get(metric.key.metric.name, 0) + int(value or 0)
    return totals
