"""`segments train` as a job: profiles as of the calibration end, the hold-out report, and the
explanation when there is no user to fit."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from devtools import generate
from pipelines import train

END = dt.date(2026, 11, 1)
UNTIL = END - dt.timedelta(days=20)


def _when(record) -> dt.datetime:
    stamp = record["timestamp"]
    if isinstance(stamp, int):
        return dt.datetime.fromtimestamp(stamp / 1000, dt.timezone.utc)
    return dt.datetime.fromisoformat(stamp).astimezone(dt.timezone.utc)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """Generated events split by time into a calibration file (before UNTIL) and a hold-out file."""
    work = tmp_path_factory.mktemp("train")
    everything = work / "all.jsonl"
    generate.generate_events(str(everything), users=300, days=60, end=END, seed=5, fmt="jsonl")
    calibration, holdout = [], []
    for line in everything.read_bytes().splitlines():
        record = json.loads(line)
        (calibration if _when(record).date() < UNTIL else holdout).append(line)
    (work / "calibration.jsonl").write_bytes(b"\n".join(calibration) + b"\n")
    (work / "holdout.jsonl").write_bytes(b"\n".join(holdout) + b"\n")
    return work


def _consented(record) -> bool:
    return (record.get("consent") or {}).get("personalization") is True


def test_train_reports_the_holdout_of_the_calibration_customers(split, monkeypatch):
    lines = []
    monkeypatch.chdir(split)  # relative paths and globs, as a user types them in the data's folder
    card = train.run(["--input", "cal*.jsonl", "--holdout", "hold*.jsonl", "--out", "model", "--until", str(UNTIL),
                      "--demo_key", "--k_min", "3", "--k_max", "4"], say=lines.append)
    assert (split / "model" / "model.joblib").exists()
    # Worked out from the raw records: customers bought before UNTIL; active ones did anything after.
    calibration = [json.loads(line) for line in (split / "calibration.jsonl").read_bytes().splitlines()]
    holdout = [json.loads(line) for line in (split / "holdout.jsonl").read_bytes().splitlines()]
    customers = {r["user_id"] for r in calibration if _consented(r) and r["event_type"] == "purchase"}
    users = {r["user_id"] for r in calibration if _consented(r)}
    active = {r["user_id"] for r in holdout if _consented(r)}
    days = (max(_when(r) for r in holdout).date() - UNTIL).days + 1
    report = card["holdout"]
    assert (report["users"], report["customers"]) == (len(users), len(customers))
    assert report["customers_active_in_holdout"] == len(customers & active)
    assert report["holdout_days"] == days
    assert card["training"]["data_end"] == f"{UNTIL}T00:00:00Z"
    assert card["money"]["reporting_currency"] == "EUR" and len(card["money"]["fx_table_sha256"]) == 64
    # Buyers in the hold-out, worked out from the raw records, and the purchase scores judged on them.
    buyers = {r["user_id"] for r in holdout if _consented(r) and r["event_type"] == "purchase"}
    assert report["customers_buying_in_holdout"] == len(customers & buyers)
    (whole,) = [h for h in report["purchase_prediction"] if h["horizon_days"] == days]
    assert whole["buyers"] == len(customers & buyers)
    assert {s["score"] for s in whole["scores"]} >= {"recency_only", "frequency_only", f"p_purchase_{days}d"}
    assert any("bought at least once in the first" in line for line in lines)
    # The drift reference: the calibration rows' bins, and movement over the 7 days before UNTIL.
    assert card["distribution"]["rows"] == len(users)
    assert card["distribution"]["daily_moves"]["days"] == 7
    assert [d["as_of_us"] for d in card["distribution"]["daily_moves"]["per_day"]] == [
        (UNTIL - dt.date(1970, 1, 1)).days * 86_400_000_000 - d * 86_400_000_000 for d in range(6, -1, -1)]
    assert any("segment changes per day at training" in line for line in lines)


def test_train_says_why_there_is_no_user_to_fit(split, tmp_path):
    with pytest.raises(ValueError, match=r"timestamp_out_of_range \(see --max_event_age_days"):
        train.run(["--input", str(split / "calibration.jsonl"), "--out", str(tmp_path / "m"), "--demo_key",
                   "--max_event_age_days", "1"], say=lambda line: None)
