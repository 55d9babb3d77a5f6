"""One absurd event never removes a customer from segmentation: a purchase of 1e308 is
dead-lettered as `value_out_of_range`, and its customer is scored from their other events,
with finite features, like every other customer."""

import datetime as dt
import json
import math

from pipelines import batch
from tests.support.expected import DAY, END
from transforms.ingest.privacy import DEMO_ID_KEY, pseudonymise


def _line(event_id, user, day, kind="page_view", **properties):
    stamp = (dt.datetime.combine(END - 3 * DAY, dt.time(12), dt.timezone.utc) + day * DAY).isoformat()
    return json.dumps({"event_id": event_id, "user_id": user, "event_type": kind, "timestamp": stamp,
                       "session_id": f"{user}-{day}", "consent": {"analytics": True, "personalization": True},
                       "properties": properties}).encode()


def test_a_1e308_purchase_is_dead_lettered_and_its_customer_still_scored(tmp_path, warehouse, unique_dataset):
    lines = [_line("a1", "ann", 0), _line("a2", "ann", 1, "purchase", value=40.0, currency="EUR"),
             _line("a3", "ann", 2, "purchase", value=1e308, currency="EUR"), _line("a4", "ann", 2),
             _line("b1", "ben", 0), _line("b2", "ben", 1, "purchase", value=25.0)]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    summary = batch.run(["--input", str(path), "--demo_key", "--as_of", str(END), "--run_id", "bounded",
                         "--bq_endpoint", warehouse.endpoint, "--bq_project", warehouse.project,
                         "--bq_dataset", unique_dataset])
    summary.check()

    client, table = warehouse.client, f"{warehouse.project}.{unique_dataset}"
    dead = [dict(row.items()) for row in client.query(f"SELECT * FROM `{table}.dead_letters`").result()]
    assert [(row["error_code"], json.loads(row["raw_payload"])["event_id"]) for row in dead] == [
        ("value_out_of_range", "a3")]
    assert "--max_event_value" in dead[0]["error_detail"]

    rows = {row["user_key"]: dict(row.items())
            for row in client.query(f"SELECT * FROM `{table}.segment_assignments`").result()}
    ann, ben = pseudonymise(DEMO_ID_KEY, "ann"), pseudonymise(DEMO_ID_KEY, "ben")
    assert set(rows) == {ann, ben}
    assert rows[ann]["event_count"] == 3  # the three valid events
    assert rows[ann]["features"]["spend_total"] == 40.0
    assert all(math.isfinite(v) for v in rows[ann]["features"].values())
    assert rows[ann]["p_alive"] is not None and 0.0 <= rows[ann]["p_alive"] <= 1.0
