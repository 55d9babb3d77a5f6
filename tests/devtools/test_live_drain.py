"""The local live mode's drain and reconciliation (`devtools.live`), without running a job.

* The ledger judges what was published by the contract, and `reconcile_latest_rows`
  compares it with the latest rows in a real (local) warehouse: every valid event
  reflected, or what is missing, said per user.
* The drain waits for every published record to be read and every pending flush to fire
  (read from the job's tally file) before it waits for the writes, and says which step
  did not finish.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time

import orjson
import pytest

from devtools import live
from transforms.bigquery import admin as bq_admin
from transforms.bigquery.loads import load_rows
from transforms.bigquery.rows import assignment_row, dead_letter_row
from transforms.bigquery.tables import TABLES, Table
from transforms.contracts.outcomes import DeadLetter, ErrorCode, Stage
from transforms.ingest.privacy import DEMO_ID_KEY
from transforms.ingest.validation import ValidationConfig
from tests.support.assignments import assignment

CONSENTED = {"analytics": True, "personalization": True}
RUN = "live-test"


def _key(raw: str) -> str:
    return hmac.new(DEMO_ID_KEY, raw.encode(), hashlib.sha256).hexdigest()


def _event(event_id: str, user: str, consent=CONSENTED) -> bytes:
    body = {"event_id": event_id, "user_id": user, "event_type": "page_view",
            "timestamp": time.time_ns() // 1_000_000 - 60_000}
    if consent is not None:
        body["consent"] = consent
    return orjson.dumps(body)


def test_the_ledger_keeps_valid_consented_unique_events_per_user():
    ledger = live.PublishedLedger(DEMO_ID_KEY, ValidationConfig())
    for data in [_event("a1", "ann"), _event("a2", "ann"), _event("a1", "ann"),  # a duplicate
                 _event("b1", "ben"), _event("c1", "cy", consent=None),  # no consent object: denied by default
                 _event("d1", "di", consent={"analytics": True, "personalization": False}),
                 b'{"event_id": "x"']:  # truncated
        ledger.add(data)

    assert ledger.expected(set()) == {_key("ann"): 2, _key("ben"): 1}
    assert ledger.expected({(_key("ann"), "a2")}) == {_key("ann"): 1, _key("ben"): 1}
    assert (ledger.records, ledger.invalid, ledger.filtered) == (7, 1, 2)


@pytest.mark.integration
def test_latest_rows_reflect_every_valid_event_or_say_what_is_missing(warehouse, unique_dataset):
    client = warehouse.client
    bq_admin.create_tables(client, unique_dataset, project=warehouse.project)
    prefix = f"{warehouse.project}.{unique_dataset}"
    since_us = time.time_ns() // 1000 - 1_000_000
    ledger = live.PublishedLedger(DEMO_ID_KEY, ValidationConfig())
    for data in [_event("a1", "ann"), _event("a2", "ann"), _event("a3", "ann"), _event("b1", "ben"),
                 _event("b2", "ben"), _event("c1", "cy")]:
        ledger.add(data)
    # Ann's a3 was too late: a dead letter carrying the (pseudonymised) event.
    late = DeadLetter.of(orjson.dumps({"user_id": _key("ann"), "event_id": "a3"}), ErrorCode.TOO_LATE, "late",
                         "pubsub:1#3", Stage.WINDOW)
    load_rows(client, TABLES[Table.DEAD_LETTERS], f"{prefix}.dead_letters", [dead_letter_row(late, RUN)])
    now_us = time.time_ns() // 1000
    day_us = 86_400_000_000
    rows = [
        # Ann: an earlier row with one event, the latest with both valid ones.
        assignment_row(assignment(_key("ann"), now_us - day_us, 1, event_count=1), now_us),
        assignment_row(assignment(_key("ann"), now_us - 1000, 1, event_count=2), now_us),
        # Ben: his latest row misses an event (b2 still pending when it was written).
        assignment_row(assignment(_key("ben"), now_us - 2000, 1, event_count=1), now_us),
    ]  # Cy: no row at all
    load_rows(client, TABLES[Table.SEGMENT_ASSIGNMENTS], f"{prefix}.segment_assignments", rows)

    check = live.reconcile_latest_rows(client, prefix, RUN, since_us, ledger)

    assert not check["reflected"]
    assert (check["users"], check["events"], check["in_rows"], check["too_late"]) == (3, 5, 3, 1)
    assert (check["missing_users"], check["short_users"], check["over_users"]) == (1, 1, 0)

    rows = [assignment_row(assignment(_key("ben"), now_us - 500, 1, event_count=2), now_us),
            assignment_row(assignment(_key("cy"), now_us - 500, 1, event_count=1), now_us)]
    load_rows(client, TABLES[Table.SEGMENT_ASSIGNMENTS], f"{prefix}.segment_assignments", rows)

    check = live.reconcile_latest_rows(client, prefix, RUN, since_us, ledger)

    assert check["reflected"] and (check["events"], check["in_rows"]) == (5, 5)


def _append(path, tallies: dict) -> None:
    with open(path, "ab") as handle:
        handle.write(orjson.dumps(tallies) + b"\n")


def test_the_drain_waits_for_pending_flushes_before_the_writes(tmp_path):
    path = str(tmp_path / "tallies.jsonl")
    # 10 records read: 1 dead-lettered at parse, 9 parsed, 8 consented and 1 without
    # consent; 5 unique so far, so 3 events still wait in a profile bag.
    _append(path, {"read": 10, "invalid_json": 1, "parsed": 9, "consented": 8, "filtered.no_consent": 1,
                   "unique_events": 5})
    asked = []

    def writes_landed():
        asked.append(live.pending_in_profiles(live.read_tallies(path)))
        return True, "landed"

    def flush_later():
        time.sleep(1.5)
        _append(path, {"unique_events": 2, "duplicates": 1})

    threading.Thread(target=flush_later, daemon=True).start()
    tallies, steps = live.drain(path, 10, writes_landed, stall_s=30, say=lambda _line: None,
                                interrupted=threading.Event(), quiet_s=0.2)

    assert steps == {"read": True, "flushed": True, "written": True}
    assert asked and set(asked) == {0}  # the writes were only checked once nothing was pending
    summary = live.summary_from_tallies(tallies)
    assert (summary.valid, summary.duplicates, summary.reconciled) == (7, 1, True)
    assert summary.filtered == {"no_consent": 1, "suppressed": 0}


def test_a_drain_that_cannot_finish_says_which_step(tmp_path):
    path = str(tmp_path / "tallies.jsonl")
    _append(path, {"read": 4, "parsed": 4, "consented": 4, "unique_events": 3})  # one event never flushed
    said = []

    tallies, steps = live.drain(path, 4, lambda: (True, "landed"), stall_s=0.5, say=said.append,
                                interrupted=threading.Event(), quiet_s=0.2)

    assert steps == {"read": True, "flushed": False, "written": False}
    assert any("1 events waiting in profile bags" in line for line in said)
    assert not live.summary_from_tallies(tallies).reconciled
