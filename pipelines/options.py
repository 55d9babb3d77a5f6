"""Pipeline options of the segmentation jobs, and strict checking of a command line.

`SegmentsOptions` carries the flags every job shares; each job's class adds its own
(`FileInputOptions` the ``--input`` of the file-reading jobs). Each flag is declared in
exactly one class; Beam's (`--runner`, `--temp_location`, `--project`, ...) are Beam's
and are not redeclared. `unknown_pipeline_args` finds a flag that neither we nor Beam
know, where Beam alone would only log "Discarding unparseable args" and run without it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import uuid
from typing import Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.bigquery.client import LOCAL_ENDPOINT, LOCAL_PROJECT, BigQueryTarget
from transforms.contracts.currency import DEFAULT_REPORTING_CURRENCY, RateTable
from transforms.features.compute import ComputeProfiles
from transforms.features.profile import ProfileRules
from transforms.ingest.privacy import ConsentDefault
from transforms.ingest.validation import ValidationConfig


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer of at least 2, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of at least 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def currency_code(text: str) -> str:
    code = text.strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise argparse.ArgumentTypeError(f"expected an ISO 4217 code such as EUR, got {text!r}")
    return code


def iso_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


# Runners that run on this machine: a job on them may fall back to the demo key.
LOCAL_RUNNERS = frozenset({"DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "PrismRunner"})


class SegmentsOptions(PipelineOptions):
    """Options shared by the batch (`segments run`) and streaming jobs."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("ingest and privacy")
        group.add_argument(
            "--consent_default", choices=[c.value for c in ConsentDefault], default=ConsentDefault.DENY.value,
            help="What an event without a consent object means: deny (strict) or grant. Default: deny.")
        group.add_argument(
            "--suppression_list", default=None,
            help="File of raw user ids to erase (one per line; local path or gs://). Default: none.")
        group.add_argument(
            "--id_key_file", default=None,
            help="File holding the HMAC key for pseudonymising user ids. Default: the SEGMENTS_ID_KEY env var.")
        group.add_argument(
            "--demo_key", action="store_true", default=False,
            help="Use the published demo key when no key is configured, without the warning (local runners only; "
                 "refused on Dataflow). Default: local runs warn and use it; Dataflow runs need a real key.")
        group.add_argument(
            "--max_event_bytes", type=positive_int, default=16 * 1024,
            help="Largest accepted record, in bytes; larger ones are dead-lettered as oversized. Default: 16384.")
        group.add_argument(
            "--max_future_skew_hours", type=positive_float, default=24.0,
            help="How far past now an event time may be, in hours. Default: 24.")
        group.add_argument(
            "--max_event_age_days", type=positive_float, default=3650.0,
            help="How far before now an event time may be, in days. Default: 3650.")

        profiles = parser.add_argument_group("profiles")
        profiles.add_argument(
            "--session_gap_minutes", type=positive_float, default=30.0,
            help="Inactivity that closes a session, in minutes. Default: 30.")
        profiles.add_argument(
            "--reporting_currency", type=currency_code, default=DEFAULT_REPORTING_CURRENCY,
            help="Currency of every money feature; amounts are converted at the rate of their day. "
                 f"Default: {DEFAULT_REPORTING_CURRENCY}.")
        profiles.add_argument(
            "--fx_rates", default=None,
            help="Exchange-rate table, CSV date,currency,units_per_eur (local path or gs://). Default: the "
                 "table shipped in transforms/contracts/reference/fx_rates.csv.")
        profiles.add_argument(
            "--early_firing_seconds", type=positive_int, default=60,
            help="Streaming only: a user's profile is updated this long (processing time) after an event "
                 "arrives, in seconds. Default: 60.")
        profiles.add_argument(
            "--rescore_days", type=positive_int, default=1,
            help="Streaming only: every user is re-scored as of every this many midnights of event time, "
                 "silent users included. Default: 1.")
        profiles.add_argument(
            "--max_silent_days", type=positive_int, default=730,
            help="Streaming only: stop re-scoring a user silent this long, in days (their next event starts "
                 "it again). Default: 730.")
        profiles.add_argument(
            "--allowed_lateness_hours", type=positive_float, default=48.0,
            help="Streaming only: how far behind the event-time clock an event may arrive and still count, in "
                 "hours; later ones are dead-lettered as too_late. Default: 48.")

        model = parser.add_argument_group("model and warehouse")
        model.add_argument(
            "--model", default=None,
            help="Model artifact folder (local or gs://). Default: the model shipped in models/default.")
        model.add_argument(
            "--warehouse", choices=["local", "bigquery"], default="local",
            help="local: the BigQuery-API server on 127.0.0.1 (`segments warehouse start`; the `segments` commands "
                 "start it on demand); bigquery: Google BigQuery with Beam's WriteToBigQuery. Default: local.")
        model.add_argument(
            "--bq_project", default=None,
            help="Project of the output dataset. Default: segments-local (local), the job's --project (bigquery).")
        model.add_argument(
            "--bq_dataset", default="segments", help="Output dataset. Default: segments.")
        model.add_argument(
            "--bq_endpoint", default=LOCAL_ENDPOINT,
            help=f"local only: REST endpoint of the warehouse (the `segments` commands start one there). "
                 f"Default: {LOCAL_ENDPOINT}.")
        model.add_argument(
            "--run_id", default=None,
            help="Identifier of this run in dead_letters and run_audit. Default: <mode>-<UTC time>-<random>.")

    def pseudonymisation_key(self) -> bytes:
        """The HMAC key: key file, else SEGMENTS_ID_KEY, else the demo key on a local runner.

        A job on Dataflow (any non-local runner) without a real key is an error, with or
        without --demo_key: the demo key is published, so its pseudonyms protect nothing.
        """
        from apache_beam.options.pipeline_options import StandardOptions

        from transforms.ingest.privacy import ID_KEY_ENV, MissingIdKey, resolve_id_key

        runner = self.view_as(StandardOptions).runner or "DirectRunner"
        local = runner in LOCAL_RUNNERS
        try:
            return resolve_id_key(self.id_key_file, use_demo_key=False)
        except MissingIdKey:
            if not local:
                raise MissingIdKey(f"no pseudonymisation key for a {runner} job: set {ID_KEY_ENV} or pass "
                                   "--id_key_file (the demo key is refused off this machine)") from None
            if not self.demo_key:
                logging.getLogger(__name__).warning(
                    "No pseudonymisation key configured: using the published demo key (fine for generated data; "
                    "set %s or --id_key_file for real data).", ID_KEY_ENV)
            return resolve_id_key(None, use_demo_key=True)

    def model_dir(self) -> str:
        from models import DEFAULT_MODEL_DIR

        return self.model or DEFAULT_MODEL_DIR

    def bigquery_target(self, streaming: bool = False) -> BigQueryTarget:
        """Where the tables are: the local warehouse at --bq_endpoint, or BigQuery."""
        from apache_beam.options.pipeline_options import GoogleCloudOptions

        if self.warehouse == "local":
            return BigQueryTarget.local(self.bq_endpoint, self.bq_project or LOCAL_PROJECT, self.bq_dataset,
                                        streaming=streaming)
        project = self.bq_project or self.view_as(GoogleCloudOptions).project
        if not project:
            raise ValueError("--warehouse bigquery needs --bq_project or --project")
        return BigQueryTarget(project=project, dataset=self.bq_dataset, streaming=streaming)

    def resolved_run_id(self, mode: str) -> str:
        """--run_id, or ``<mode>-<UTC time>-<random>``."""
        if self.run_id:
            return self.run_id
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return f"{mode}-{now}-{uuid.uuid4().hex[:6]}"

    def profile_rules(self) -> ProfileRules:
        return ProfileRules(
            session_gap=dt.timedelta(minutes=self.session_gap_minutes),
            allowed_lateness=dt.timedelta(hours=self.allowed_lateness_hours),
            rates=RateTable.load(self.fx_rates),
            reporting_currency=self.reporting_currency,
        )

    def profile_transform(self, as_of_us=None, history_days: int = 0) -> ComputeProfiles:
        """The per-user profile step configured by these options (arguments: see `ComputeProfiles`)."""
        return ComputeProfiles(
            self.profile_rules(),
            as_of_us=as_of_us,
            history_days=history_days,
            early_firing=dt.timedelta(seconds=self.early_firing_seconds),
            rescore_every=dt.timedelta(days=self.rescore_days),
            max_silent=dt.timedelta(days=self.max_silent_days),
        )

    def validation_config(self) -> ValidationConfig:
        return ValidationConfig(
            max_event_bytes=self.max_event_bytes,
            max_future_skew=dt.timedelta(hours=self.max_future_skew_hours),
            max_age=dt.timedelta(days=self.max_event_age_days),
        )


class FileInputOptions(SegmentsOptions):
    """The input of the jobs that read event files (`segments run`, `segments train`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        # Not argparse-required: Beam re-parses options internally without our flags,
        # which would then exit. The jobs and the CLI insist on it instead.
        parser.add_argument_group("input").add_argument(
            "--input", action="append", default=None,
            help="(Required) Event files: a path, glob or gs:// pattern; JSON lines, or Avro when it ends in .avro. "
                 "Repeatable.")


def declare_flags(parser: argparse.ArgumentParser, options_class: type) -> None:
    """Adds every flag `options_class` parses (its own and its bases'), base classes first."""
    for cls in reversed(options_class.mro()):
        if cls is not PipelineOptions and "_add_argparse_args" in cls.__dict__:
            cls._add_argparse_args(parser)


def _all_option_classes() -> list[type]:
    found, todo = [], [PipelineOptions]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


def unknown_pipeline_args(args: Sequence[str]) -> list[str]:
    """The flags in `args` that no registered `PipelineOptions` class declares.

    Raises:
      argparse.ArgumentError: two option classes declare the same flag.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for cls in _all_option_classes():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(list(args))
    return [arg for arg in unknown if arg.startswith("-")]
