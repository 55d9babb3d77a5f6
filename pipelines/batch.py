"""The main batch job: event files in, segment assignments out.

Run locally (DirectRunner, local warehouse):

    segments run --input 'data/events-*.jsonl' --summary summary.json --demo_key

On Dataflow (see README, "Production"):

    segments run --input 'gs://BUCKET/events/*.avro' --runner DataflowRunner \
        --project PROJECT --region REGION --temp_location gs://BUCKET/tmp ...
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional, Sequence

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.options import SegmentsOptions
from pipelines.summary import RunSummary, counters_of
from transforms.dedupe import DedupeEvents
from transforms.privacy import ApplyPrivacy, resolve_id_key
from transforms.sources import ReadEventFiles

LOG = logging.getLogger(__name__)


class BatchOptions(SegmentsOptions):
    """Flags of `segments run` beyond the shared ones."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("batch job")
        # Not argparse-required: Beam re-parses options internally without our flags,
        # which would then exit. `run` and the CLI insist on it instead.
        group.add_argument(
            "--input", action="append", default=None,
            help="(Required) Event files: a path, glob or gs:// pattern; JSON lines, or Avro when it ends in .avro. Repeatable.")
        group.add_argument(
            "--summary", default=None,
            help="Write the run summary (JSON) to this path. Default: console only.")
        group.add_argument(
            "--output_dir", default=os.path.join(".work", "output"),
            help="Directory for local outputs (dead letters as JSON lines). Default: .work/output.")


@dataclasses.dataclass
class BatchOutputs:
    events: beam.PCollection
    dead_letters: beam.PCollection


def read_prepared_events(p: beam.Pipeline, options, id_key: bytes) -> tuple[beam.PCollection, beam.PCollection]:
    """Files -> validated, consented, pseudonymised, unique events (+ their dead letters)."""
    parsed = p | "ReadEvents" >> ReadEventFiles(options.input, options.validation_config())
    events = (
        parsed.events
        | "Privacy" >> ApplyPrivacy(id_key, options.suppression_list, options.consent_default)
        | "Dedupe" >> DedupeEvents()
    )
    return events, parsed.dead_letters


def build_pipeline(p: beam.Pipeline, options: BatchOptions, id_key: bytes) -> BatchOutputs:
    """Builds the batch graph (exposed for testing); `id_key` is the pseudonymisation key."""
    events, dead_letters = read_prepared_events(p, options, id_key)
    (
        dead_letters
        | "DeadLettersToJson" >> beam.Map(lambda letter: orjson.dumps(letter._asdict()).decode("utf-8"))
        | "WriteDeadLetters" >> beam.io.WriteToText(
            os.path.join(options.output_dir, "dead_letters"), file_name_suffix=".jsonl", shard_name_template="")
    )
    return BatchOutputs(events=events, dead_letters=dead_letters)


def run(argv: Optional[Sequence[str]] = None) -> RunSummary:
    """Parses flags, runs the job to completion and returns its (checked) summary."""
    options = PipelineOptions(argv)
    batch = options.view_as(BatchOptions)
    if not batch.input:
        raise ValueError("--input is required")
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    id_key = resolve_id_key(batch.id_key_file, batch.demo_key and "Dataflow" not in runner)
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, batch, id_key)
    summary = RunSummary.from_counters(counters_of(p.result), extra={"input": list(batch.input)})
    if batch.summary:
        summary.write(batch.summary)
    return summary


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run().check()
