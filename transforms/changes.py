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
  runs' rows). The changes of many users are then explained together, in batches
  (`beam.BatchElements`, one numpy pass over the model per batch).

``change_key = sha256(user_key, model_version, as_of)``: one change at most per user,
model and scoring time, so writing the same changes again (a rerun) replaces nothing
(`transforms.bigquery.merge`).
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Protocol, Sequence

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
# Changes explained per numpy pass in the batch job: the pass costs about as much for a
# thousand rows as for one, and a batch of change records is a few MB at most.
DEFAULT_MAX_EXPLAIN_BATCH = 1024


DriverInputs = tuple[Optional[Mapping[str, float]], Mapping[str, float], Optional[int], int]


class Explainer(Protocol):
    """What `DetectSegmentChanges` needs of the model (`models.explain.LoadedExplainer`)."""

    def drivers(self, before: Optional[Mapping[str, float]], after: Mapping[str, float],
                from_segment_id: Optional[int], to_segment_id: int) -> list[dict]:
        ...

    def drivers_of_rows(self, rows: Sequence[DriverInputs]) -> list[list[dict]]:
        """`drivers` of many ``(before, after, from_segment_id, to_segment_id)`` at once."""
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
    unexplained = unexplained_change_of(previous, assignment)
    if unexplained is None:
        return None
    change, inputs = unexplained
    change["drivers"] = explainer.drivers(*inputs)
    return change


def unexplained_change_of(previous: Optional[Last],
                          assignment: Mapping[str, Any]) -> Optional[tuple[dict, DriverInputs]]:
    """`change_of` without its ``drivers`` (None until explained), and what explains it:
    ``(change, (before, after, from segment id, to segment id))``; None when nothing changed.

    Explaining apart lets a batch of changes be explained in one pass over the model.
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
        "drivers": None,
        "event_count": int(assignment.get("event_count") or 0),
    }, (before, assignment["features"], None if previous is None else previous.segment_id, segment_id)


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


def changes_of_history(assignments: Iterable[Mapping[str, Any]]) -> Iterable[tuple[dict, DriverInputs]]:
    """Bounded: one user's assignments of the run -> their unexplained changes, in as-of order."""
    previous = None
    # One assignment per score date of the run: a short list, however long the history.
    for assignment in sorted(assignments, key=lambda a: int(a["as_of_us"])):
        if previous is not None and int(assignment["as_of_us"]) <= previous.as_of_us:
            continue
        unexplained = unexplained_change_of(previous, assignment)
        previous = last_of(assignment)
        if unexplained is not None:
            yield unexplained


class ExplainChangesFn(_ExplainingFn):
    """A batch of unexplained changes (`unexplained_change_of`) -> the change records, explained
    together (one numpy pass over the model per batch)."""

    def process(self, batch: Sequence[tuple[dict, DriverInputs]]) -> Iterable[dict]:
        drivers = self._explainer.drivers_of_rows([inputs for _, inputs in batch])
        for (change, _), explained in zip(batch, drivers):
            change["drivers"] = explained
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
        max_batch_size: bounded input: the most changes explained in one pass.
    """

    def __init__(self, explainer: ExplainerLoader, max_batch_size: int = DEFAULT_MAX_EXPLAIN_BATCH):
        super().__init__()
        self._explainer = explainer
        self._max_batch_size = max_batch_size

    def expand(self, assignments: beam.PCollection[dict]) -> beam.PCollection[dict]:
        options = assignments.pipeline.options
        unbounded = bool(options and options.view_as(StandardOptions).streaming) or not assignments.is_bounded
        keyed = assignments | "KeyByUser" >> beam.Map(state_key).with_output_types(tuple[str, dict])
        if unbounded:
            return keyed | "CompareWithLast" >> beam.ParDo(ChangesOfStreamFn(self._explainer))
        return (keyed
                | "HistoryPerUser" >> beam.GroupByKey()
                | "CompareConsecutive" >> beam.FlatMap(lambda kv: changes_of_history(kv[1])).with_output_types(
                    tuple[dict, DriverInputs])
                | "BatchChanges" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._max_batch_size)
                | "ExplainChanges" >> beam.ParDo(ExplainChangesFn(self._explainer)))
