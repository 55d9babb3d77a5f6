"""The part of the graph both jobs share: scoring, dead letters and writes.

Each job builds its own head (a source, privacy, the feature step) and hands the
feature records to `segment_and_write`. Its steps are applied to the pipeline itself,
not wrapped in one composite, so their labels (``AssignSegments``, ``WriteAssignments``,
``SegmentChanges``, ``WriteChanges``, ``PublishChanges``, ``WriteDeadLetters``) are
top-level steps of both jobs: Dataflow matches steps by label on an in-place update.

Segment changes (`transforms.changes`) are detected after scoring, from the assignments,
and written to ``segment_changes`` (both jobs) and, with a changes topic, published to
Pub/Sub (one JSON message per change).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from transforms.bigquery.client import BigQueryTarget
from transforms.bigquery.write import WriteAssignments, WriteChanges, WriteDeadLetters, change_row_now
from models.serving import ServingModel
from transforms.changes import DetectSegmentChanges, PublishChanges
from transforms.features.streaming_profiles import SEED
from transforms.scoring import AssignSegments


class Segmented(NamedTuple):
    """Outputs of `segment_and_write`."""

    assignments: beam.PCollection  # assignment dicts, counted by the handler (ASSIGNMENTS)
    dead_letters: beam.PCollection  # every dead letter of the job, written or not
    changes: beam.PCollection  # change records


class JobOutputs(NamedTuple):
    """What a job's `build_pipeline` exposes, for tests and further steps.

    Attributes:
      events: valid, consented, pseudonymised events; duplicates still in.
      features: feature records.
      assignments: assignment dicts, one per feature record scored.
      dead_letters: every `DeadLetter` of the job (parse, too late, inference, and rows
        the warehouse refused), written or not.
      audit: streaming only: the `run_audit` rows (one per interval); None without a target.
      interval_counts: streaming only: the tallies behind each audit row; None without a target.
      changes: segment change records (`transforms.changes`).
    """

    events: beam.PCollection
    features: beam.PCollection
    assignments: beam.PCollection
    dead_letters: beam.PCollection
    audit: Optional[beam.PCollection] = None
    interval_counts: Optional[beam.PCollection] = None
    changes: Optional[beam.PCollection] = None


def segment_and_write(features: beam.PCollection, model: ServingModel, dead_letters: Sequence[beam.PCollection],
                      target: Optional[BigQueryTarget], run_id: Optional[str],
                      changes_topic: Optional[str] = None, seeded: bool = False) -> Segmented:
    """Feature records -> assignments in `segment_assignments`, their changes in
    `segment_changes` (and on `changes_topic`); every dead letter in `dead_letters`.

    Args:
      features: feature records.
      model: the verified model: its scoring handler and change explainer (`models.serving`).
      dead_letters: the dead letters of the steps before (parse, too late).
      target: where to write; None builds the graph without writing.
      run_id: written on dead letters.
      changes_topic: ``projects/P/topics/T`` to publish each change to; None publishes none.
      seeded: the features include the seed records of a profile snapshot (streaming):
        they reach the change step only, which learns where each user stood from them.
    """
    assigned = features | "AssignSegments" >> AssignSegments(model.handler)
    assignments = assigned.assignments
    if seeded:
        assignments = assignments | "NotSeeds" >> beam.Filter(lambda a: a.get("scoring") != SEED)
    every = [*dead_letters, assigned.dead_letters]
    if target is not None:
        every.append(assignments | "WriteAssignments" >> WriteAssignments(target))
    changes = assigned.assignments | "SegmentChanges" >> DetectSegmentChanges(model.explainer)
    if target is not None:
        every.append(changes | "WriteChanges" >> WriteChanges(target))
    if changes_topic:
        changes | "PublishChanges" >> PublishChanges(changes_topic, change_row_now)
    # Dead letters come from steps windowed differently (files and messages in the global
    # window, scoring in the feature windows); they are written one by one, never grouped
    # by window, so they meet in the global window.
    every_dead_letter = (
        [letters | f"DeadLettersGlobal{i}" >> beam.WindowInto(GlobalWindows()) for i, letters in enumerate(every)]
        | "AllDeadLetters" >> beam.Flatten())
    if target is not None:
        every_dead_letter | "WriteDeadLetters" >> WriteDeadLetters(target, run_id)
    return Segmented(assignments, every_dead_letter, changes)
