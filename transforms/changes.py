"""Segment changes: a user entered a segment, moved to another, or changed named RFM segment.

`DetectSegmentChanges` reads the assignments that scoring produced (RunInference stays the
way the model is applied) and compares each user's scoring with their previous one of the
same model version. A change record is emitted when

* the user has no previous scoring (``kind`` = ``entered``: from nothing);
* the segment differs (``kind`` = ``segment``; the named RFM segment may differ too);
* the segment is the same and the moment differs (``kind`` = ``moment``: what the user is
  doing now, `models.moments`; ``moment_reason`` says which window figures decided it);
* only the named RFM segment differs (``kind`` = ``rfm``).

Every change record carries both moments (from, to), whatever its kind.

Each record says who (the pseudonymous ``user_key``), from -> to (segment id and name,
RFM segment), when (``as_of``, ``score_date``, the previous scoring's ``as_of``), which
model, the scores of the new scoring, and why: the features that moved the user most,
with their values before and after and their contribution to the distance (defined in
`models.explain`, which the transform is handed as an explainer and loads in
``DoFn.setup``).

* Unbounded input (the streaming job): one small stateful step keyed by (model version,
  user), holding the user's last scoring (as of, segment, RFM segment, features). A
  scoring as of a time not after the last one seen (a daily re-scoring at midnight that
  arrives after an update on a later event) is skipped: changes follow the scorings in
  as-of order. The state lives as long as the job: a new job (not an in-place update)
  starts from nothing, unless it starts from a profile snapshot: then each seeded user's
  scoring as of the snapshot (``scoring`` = ``seed``, never written as a row) is
  remembered without a change, so their first change in the new job is a real one.
* Bounded input (the batch job): the user's scorings within the run (one per score
  date), in as-of order: a change between consecutive score dates of the run, and
  "entered" at the user's first scored date of the run (a run does not read earlier
  runs' rows).

``change_key = sha256(user_key, model_version, as_of)``: one change at most per user,
model and scoring time, so writing the same changes again (a rerun) replaces nothing
(`transforms.bigquery.merge`).
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Protocol

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import userstate

from transforms.contracts.outcomes import CHANGES, counter
from transforms.features.streaming_profiles import SEED

ENTERED = "entered"
SEGMENT = "segment"
RFM = "rfm"
MOMENT = "moment"


class Explainer(Protocol):
    """What `DetectSegmentChanges` needs of the model (`models.explain.LoadedExplainer`)."""

    def drivers(self, before: Optional[Mapping[str, float]], after: Mapping[str, float],
                from_segment_id: Optional[int], to_segment_id: int) -> list[dict]:
        ...


class ExplainerLoader(Protocol):
    """Loads an `Explainer` on the worker (`models.explain.ChangeExplainer`)."""

    def load(self) -> Explainer:
        ...


class Last(NamedTuple):
    """A user's last scoring, as the change step keeps it."""

    as_of_us: int
    segment_id: int
    segment_name: str
    rfm_segment: Optional[str]
    features: dict
    moment: Optional[str] = None


def last_of(assignment: Mapping[str, Any]) -> Last:
    rfm = assignment.get("rfm") or {}
    return Last(int(assignment["as_of_us"]), int(assignment["segment_id"]), assignment["segment_name"],
                rfm.get("rfm_segment"), dict(assignment["features"]), assignment.get("moment"))


def change_key(user_key: str, model_version: str, as_of_us: int) -> str:
    """The identity of a change: one per user, model version and scoring time."""
    return hashlib.sha256(f"{user_key}\x1f{model_version}\x1f{int(as_of_us)}".encode("utf-8")).hexdigest()


def change_of(previous: Optional[Last], assignment: Mapping[str, Any], explainer: Explainer) -> Optional[dict]:
    """The change from `previous` to `assignment` (a `models.handler.to_assignment` dict), or None.

    None when the segment, the moment and the named RFM segment are all unchanged. The
    caller makes sure `assignment` is later than `previous`.
    """
    rfm = assignment.get("rfm") or {}
    to_rfm = rfm.get("rfm_segment")
    segment_id = int(assignment["segment_id"])
    if previous is None:
        kind = ENTERED
    elif previous.segment_id != segment_id:
        kind = SEGMENT
    elif previous.moment != assignment.get("moment"):
        kind = MOMENT
    elif previous.rfm_segment != to_rfm:
        kind = RFM
    else:
        return None
    before = None if previous is None else previous.features
    return {
        "change_key": change_key(assignment["user_key"], assignment["model_version"], assignment["as_of_us"]),
        "user_key": assignment["user_key"],
        "kind": kind,
        "as_of_us": int(assignment["as_of_us"]),
        "previous_as_of_us": None if previous is None else previous.as_of_us,
        "scoring": assignment.get("scoring"),
        "model_version": assignment["model_version"],
        "from_segment_id": None if previous is None else previous.segment_id,
        "from_segment_name": None if previous is None else previous.segment_name,
        "to_segment_id": segment_id,
        "to_segment_name": assignment["segment_name"],
        "from_rfm_segment": None if previous is None else previous.rfm_segment,
        "to_rfm_segment": to_rfm,
        "from_moment": None if previous is None else previous.moment,
        "to_moment": assignment.get("moment"),
        "moment_reason": assignment.get("moment_reason"),
        "scores": {
            "distance": assignment.get("distance"),
            "margin": assignment.get("margin"),
            "p_alive": assignment.get("p_alive"),
            "churn_risk": assignment.get("churn_risk"),
            "expected_purchases_30d": assignment.get("expected_purchases_30d"),
            "rfm_r": rfm.get("r"),
            "rfm_f": rfm.get("f"),
            "rfm_m": rfm.get("m"),
        },
        "drivers": explainer.drivers(before, assignment["features"], None if previous is None else previous.segment_id,
                                     segment_id),
        "event_count": int(assignment.get("event_count") or 0),
    }


def state_key(assignment: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """``(model version/user key, assignment)``: changes are followed per user and model version."""
    return f"{assignment['model_version']}/{assignment['user_key']}", assignment


class _ExplainingFn(beam.DoFn):
    def __init__(self, explainer: ExplainerLoader):
        self._loader = explainer

    def setup(self):
        self._explainer = self._loader.load()
        self._changes = counter(CHANGES)


class ChangesOfStreamFn(_ExplainingFn):
    """Unbounded: ``(state key, assignment)`` -> change records, keeping the user's last scoring."""

    LAST = userstate.ReadModifyWriteStateSpec("last", PickleCoder())

    def process(self, element: tuple[str, Mapping[str, Any]], last=beam.DoFn.StateParam(LAST)) -> Iterable[dict]:
        _, assignment = element
        previous = last.read()
        if assignment.get("scoring") == SEED:  # where a seeded user stood: remembered, not a change
            if previous is None or int(assignment["as_of_us"]) > previous.as_of_us:
                last.write(last_of(assignment))
            return
        # An earlier scoring arriving late (the later one already counted) changes nothing.
        if previous is None or int(assignment["as_of_us"]) > previous.as_of_us:
            last.write(last_of(assignment))
            change = change_of(previous, assignment, self._explainer)
            if change is not None:
                self._changes.inc()
                yield change


class ChangesOfHistoryFn(_ExplainingFn):
    """Bounded: ``(state key, the user's assignments of the run)`` -> change records, in as-of order."""

    def process(self, element: tuple[str, Iterable[Mapping[str, Any]]]) -> Iterable[dict]:
        _, assignments = element
        previous = None
        # One assignment per score date of the run: a short list, however long the history.
        for assignment in sorted(assignments, key=lambda a: int(a["as_of_us"])):
            if previous is not None and int(assignment["as_of_us"]) <= previous.as_of_us:
                continue
            change = change_of(previous, assignment, self._explainer)
            previous = last_of(assignment)
            if change is not None:
                self._changes.inc()
                yield change


def change_message(row: Mapping[str, Any]):
    """A `segment_changes` row as a Pub/Sub message: the row as JSON, and attributes a
    subscription can filter on (``kind``, ``to_segment_id``, ``model_version``, and
    ``to_moment`` when the scoring has a moment)."""
    import orjson
    from apache_beam.io.gcp.pubsub import PubsubMessage

    attributes = {"kind": str(row["kind"]), "to_segment_id": str(row["to_segment_id"]),
                  "model_version": str(row["model_version"])}
    if row.get("to_moment") is not None:
        attributes["to_moment"] = str(row["to_moment"])
    return PubsubMessage(orjson.dumps(row), attributes)


class PublishChanges(beam.PTransform):
    """Change records -> one JSON message each on a Pub/Sub topic, for activation.

    The message body is the change's `segment_changes` row (`to_row`: the row conversion,
    handed in by the caller), so a subscriber reads the same fields as an analyst.

    Args:
        topic: ``projects/P/topics/T``.
        to_row: change record -> row (`transforms.bigquery.write.change_row_now`).
    """

    def __init__(self, topic: str, to_row):
        super().__init__()
        self._topic = topic
        self._to_row = to_row

    def expand(self, changes: beam.PCollection[dict]):
        to_row = self._to_row
        return (changes
                | "ToMessage" >> beam.Map(lambda change: change_message(to_row(change)))
                | "Publish" >> beam.io.WriteToPubSub(self._topic, with_attributes=True))


class DetectSegmentChanges(beam.PTransform):
    """Assignments -> segment change records (see the module docstring).

    Args:
        explainer: loads the model's explainer on the worker (`models.explain.change_explainer`).
    """

    def __init__(self, explainer: ExplainerLoader):
        super().__init__()
        self._explainer = explainer

    def expand(self, assignments: beam.PCollection[dict]) -> beam.PCollection[dict]:
        options = assignments.pipeline.options
        unbounded = bool(options and options.view_as(StandardOptions).streaming) or not assignments.is_bounded
        keyed = assignments | "KeyByUser" >> beam.Map(state_key).with_output_types(tuple[str, dict])
        if unbounded:
            return keyed | "CompareWithLast" >> beam.ParDo(ChangesOfStreamFn(self._explainer))
        return (keyed
                | "HistoryPerUser" >> beam.GroupByKey()
                | "CompareConsecutive" >> beam.ParDo(ChangesOfHistoryFn(self._explainer)))
