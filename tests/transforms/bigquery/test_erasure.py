"""Erasure against the local warehouse: every row of the erased users goes, nothing else, and it is recorded."""

from __future__ import annotations

import base64
import json

import pytest

from transforms.bigquery import admin
from transforms.bigquery import rows as bq_rows
from transforms.bigquery import tables as bt
from transforms.bigquery.erasure import erase_users
from transforms.bigquery.loads import load_rows
from transforms.contracts.outcomes import DeadLetter
from tests.support.assignments import assignment as support_assignment
from transforms.ingest.privacy import DEMO_ID_KEY, UserIdFinder, pseudonymise, read_suppression_list

pytestmark = pytest.mark.integration

T0 = 1_704_067_200_000_000
DAY_US = 86_400_000_000


def _avro_string(text: str) -> bytes:
    """A string as Avro's binary encoding writes it: zig-zag varint of the length, then UTF-8 (Avro spec)."""
    data = text.encode("utf-8")
    n, out = len(data) << 1, bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out) + data


def assignment(user_key, day):
    return support_assignment(user_key, T0 + (day + 1) * DAY_US, 1)


def event_json(user_id, event_id="e1"):
    return json.dumps({"event_id": event_id, "user_id": user_id, "event_type": "page_view", "timestamp": "x"})


def letters(user_id: str) -> dict[str, DeadLetter]:
    """One dead letter of each kind a user's id can hide in."""
    key = pseudonymise(DEMO_ID_KEY, user_id)
    binary = b"\x00\xff" + _avro_string(user_id) + b"\xfe"  # a damaged Avro block: not UTF-8
    return {
        "event": DeadLetter(event_json(user_id), "utf8", "bad_timestamp", "", "f:1", "validate", T0),
        "truncated": DeadLetter(event_json(user_id)[:45], "utf8", "invalid_json", "", "f:2", "parse", T0),
        "spaced": DeadLetter('{"user_id" :  "%s", "oops' % user_id, "utf8", "invalid_json", "", "f:3", "parse", T0),
        "avro": DeadLetter(base64.b64encode(binary).decode(), "base64", "corrupt_file", "", "f@9", "parse", T0),
        "row": DeadLetter(json.dumps(bq_rows.assignment_row(assignment(key, 0), T0)), "utf8", "row_rejected", "",
                          "bigquery:segment_assignments", "write", T0),
    }


def test_erase_deletes_every_row_of_the_users_and_only_theirs(warehouse, unique_dataset, tmp_path):
    client, project = warehouse.client, warehouse.project
    admin.create_tables(client, unique_dataset, project=project)
    users = {"gone": "u-17", "other": "u-170", "spaced": " u 3 "}
    keys = {name: pseudonymise(DEMO_ID_KEY, user) for name, user in users.items()}
    table = lambda name: f"{project}.{unique_dataset}.{name}"  # noqa: E731
    load_rows(client, bt.TABLES[bt.Table.SEGMENT_ASSIGNMENTS], table("segment_assignments"),
              [bq_rows.assignment_row(assignment(keys[name], day), T0) for name in users for day in range(3)])
    stored = [dl for name in users for dl in letters(users[name]).values()]
    load_rows(client, bt.TABLES[bt.Table.DEAD_LETTERS], table("dead_letters"),
              [bq_rows.dead_letter_row(dl, "run-1") for dl in stored])
    # A shadow comparison (segments shadow) keeps users too.
    load_rows(client, bt.TABLES[bt.Table.SHADOW_MOVES], table("shadow_moves"), [
        {"shadow_id": "s1", "user_key": keys[name], "score_date": "2024-01-01", "as_of": "2024-01-02 00:00:00 UTC",
         "current_model_version": "a", "candidate_model_version": "b", "current_segment_id": 1,
         "current_segment_name": "x", "candidate_segment_id": 1, "candidate_segment_name": "x", "moved": False,
         "drivers": [], "created_at": "2024-01-02 00:00:00 UTC"} for name in users])
    suppression = tmp_path / "erasures.txt"
    suppression.write_text("# requests\nu-1\n")

    erasure = erase_users(client, project, unique_dataset, ["u-17", " u 3 ", "u-17"], DEMO_ID_KEY, str(suppression),
                          erasure_id="erase-1", now_us=T0)

    assert erasure.deleted == {"segment_assignments": 6, "dead_letters": 10, "segment_changes": 0, "shadow_moves": 2}
    left = [r["user_key"] for r in client.query(f"SELECT user_key FROM `{table('segment_assignments')}`").result()]
    assert sorted(left) == [keys["other"]] * 3
    shadow = [r["user_key"] for r in client.query(f"SELECT user_key FROM `{table('shadow_moves')}`").result()]
    assert shadow == [keys["other"]]
    remaining = {r["raw_payload"] for r in client.query(f"SELECT raw_payload FROM `{table('dead_letters')}`").result()}
    assert remaining == {dl.raw_payload for dl in letters(users["other"]).values()}
    assert read_suppression_list(str(suppression)) == {"u-1", "u-17", " u 3 "}
    (audit,) = [dict(r) for r in client.query(f"SELECT * FROM `{table('erasure_audit')}`").result()]
    assert (audit["erasure_id"], audit["users"], sorted(audit["user_keys"])) == (
        "erase-1", 2, sorted([keys["gone"], keys["spaced"]]))
    assert sorted((d["table_name"], d["row_count"]) for d in audit["deleted"]) == [
        ("dead_letters", 10), ("segment_assignments", 6), ("segment_changes", 0), ("shadow_moves", 2)]
    assert "u-17" not in json.dumps(audit, default=str) and "u 3" not in json.dumps(audit, default=str)

    # Idempotent: a second erasure finds nothing more and adds nothing to the list.
    again = erase_users(client, project, unique_dataset, ["u-17"], DEMO_ID_KEY, str(suppression), now_us=T0)
    assert (again.deleted, again.suppression_added) == (
        {"segment_assignments": 0, "dead_letters": 0, "segment_changes": 0, "shadow_moves": 0}, 0)


@pytest.mark.parametrize("data, binary, found", [
    (b'{"user_id": "u-1", "x": 1', False, True),
    (b'{"user_key":"u-1"}', False, True),
    (b'{"user_id": "u\\u002d1"}', False, True),  # JSON escapes are read
    (b'{"user_id": "u-10"}', False, False),  # another user whose id starts the same
    (b'{"event_id": "u-1"}', False, False),  # the id in another field
    (b"\x01" + _avro_string("u-1") + b"\x02", True, True),
    (b"\x01" + _avro_string("u-1" * 30) + b"\x02", True, True),  # a two-byte length
    (b"\x01" + _avro_string("u-10") + b"\x02", True, False),
    (b"\x01" + _avro_string("u-1") + b"\x02", False, False),  # text is not read as Avro
])
def test_user_id_finder(data, binary, found):
    assert UserIdFinder(["u-1", "u-1" * 30]).names(data, binary=binary) is found
