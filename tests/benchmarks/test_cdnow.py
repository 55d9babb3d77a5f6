"""The CDNOW benchmark's reading and mapping: a small wheel-shaped zip in, contract events out."""

from __future__ import annotations

import datetime as dt
import zipfile

import orjson

from benchmarks import cdnow
from transforms.ingest.validation import ValidationConfig, parse_event

SAMPLE = """ customer_id  date number_of_cds  dollar_value
 00001 19970101  1   11.77
 00003 19970102  2   20.76
 00003 19970930  1   10.00
 00003 19971001  2   19.54
 00003 19980630  5   57.45
 00003 19980701  4   20.96
"""


def test_lines_become_valid_purchase_events_split_at_the_calibration_end(tmp_path):
    wheel = tmp_path / cdnow.WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(cdnow.MEMBER, SAMPLE)
    lines = cdnow.read_cdnow(wheel)
    assert lines[0] == ("00001", dt.date(1997, 1, 1), 1, 11.77) and len(lines) == 6
    calibration, holdout = cdnow.write_events(lines, tmp_path)
    config = ValidationConfig(max_age=dt.timedelta(days=36500))
    cal = [parse_event(raw, "cal", config) for raw in calibration.read_bytes().splitlines()]
    hold = [parse_event(raw, "hold", config) for raw in holdout.read_bytes().splitlines()]
    # Before 1997-10-01 calibration; to 1998-06-30 hold-out; 1998-07-01 in neither.
    assert [e.timestamp_us // 86_400_000_000 for e in cal] == [
        (dt.date(1997, 1, 1) - dt.date(1970, 1, 1)).days, (dt.date(1997, 1, 2) - dt.date(1970, 1, 1)).days,
        (dt.date(1997, 9, 30) - dt.date(1970, 1, 1)).days]
    assert len(hold) == 2 and {e.event_type for e in cal + hold} == {"purchase"}
    first = orjson.loads(calibration.read_bytes().splitlines()[1])
    assert first["properties"] == {"value": 20.76, "currency": "USD", "quantity": 2, "order_id": "cdnow-order-1"}
    assert first["user_id"] == "cdnow-00003" and first["consent"]["personalization"] is True
