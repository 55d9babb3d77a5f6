"""The feature record: one user, one window, one pane; shared by both plans of the feature step.

`feature_record` is the only place a record is assembled, so the windowed plan
(`transforms.features.compute`, streaming) and the per-user plan (`transforms.features.per_user`,
bounded input) cannot drift apart in fields or order.
"""

from __future__ import annotations

import enum

import apache_beam as beam
from apache_beam.utils.windowed_value import PaneInfoTiming

from transforms.features.partials import UserPartial, finalize
from transforms.contracts.feature_spec import FEATURE_VERSION, MODEL_FEATURES

# Every key of a feature record, in a stable order.
RECORD_IDENTITY_FIELDS: tuple[str, ...] = (
    "user_key", "window_start_us", "window_end_us", "pane", "feature_version", "event_count",
)  # fmt: skip
EXTRA_FEATURE_FIELDS: tuple[str, ...] = (
    "top_category", "channel_mix", "device_mix", "first_seen_us", "is_new", "funnel_stage_name",
    "first_purchase_us", "last_purchase_us",
)  # fmt: skip
FEATURE_RECORD_FIELDS: tuple[str, ...] = RECORD_IDENTITY_FIELDS + MODEL_FEATURES + EXTRA_FEATURE_FIELDS


class Pane(str, enum.Enum):
    """Timing of the pane a record comes from."""

    EARLY = "early"
    ON_TIME = "on_time"
    LATE = "late"


_PANE_OF_TIMING = {
    PaneInfoTiming.EARLY: Pane.EARLY,
    PaneInfoTiming.ON_TIME: Pane.ON_TIME,
    PaneInfoTiming.LATE: Pane.LATE,
    # A bounded run without triggers firing reports UNKNOWN for its single final pane.
    PaneInfoTiming.UNKNOWN: Pane.ON_TIME,
}


def feature_record(user_key: str, partial: UserPartial, start_us: int, end_us: int, pane: Pane) -> dict:
    """The record of one user window, keys in `FEATURE_RECORD_FIELDS` order."""
    record = {
        "user_key": user_key,
        "window_start_us": start_us,
        "window_end_us": end_us,
        "pane": pane.value,
        "feature_version": FEATURE_VERSION,
    }
    # `finalize` lists its features in FEATURE_RECORD_FIELDS order (tests/transforms/features/test_features.py).
    record.update(finalize(partial, start_us, end_us))
    return record


class FormatFeatureRecord(beam.DoFn):
    """``(user_key, UserPartial)`` in a user window -> feature record dict."""

    def process(
        self,
        element: tuple[str, UserPartial],
        win=beam.DoFn.WindowParam,
        pane=beam.DoFn.PaneInfoParam,
    ):
        user_key, partial = element
        yield feature_record(user_key, partial, win.start.micros, win.end.micros, _PANE_OF_TIMING[pane.timing])
