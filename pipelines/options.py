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
import os
import re
import uuid
from typing import Callable, Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.flags import currency_code, file_location, float_in, int_in, sha256_hex
from transforms.bigquery.client import LOCAL_ENDPOINT, LOCAL_PROJECT, BigQueryTarget
from transforms.contracts.currency import DEFAULT_REPORTING_CURRENCY, RateTable
from transforms.contracts.events import DEFAULT_MAX_EVENT_VALUE, MAX_EVENT_VALUE_LIMIT
from transforms.features.compute import ComputeProfiles
from transforms.features.profile import ProfileRules
from transforms.ingest.privacy import ConsentDefault
from transforms.ingest.validation import ValidationConfig


# Runners that run on this machine: a job on them may fall back to the demo key.
LOCAL_RUNNERS = frozenset({"DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "PrismRunner"})


# Upper bounds of the job's options: generous, and far from where dates overflow.
MAX_EVENT_BYTES = 100 * 1024 * 1024  # BigQuery's largest row in a load job
MAX_DAYS = 3650
MAX_HOURS = 24 * 3650
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # BigQuery's largest row in a streaming insert
DEFAULT_PAYLOAD_BYTES = 1024 * 1024
# Where dead letters the warehouse refused go when --dead_letter_fallback is not given
# (local runs; a job off this machine uses --temp_location).
LOCAL_FALLBACK_DIR = os.path.join(".work", "fallback")


class SegmentsOptions(PipelineOptions):
    """Options shared by the batch (`segments run`) and streaming jobs."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("ingest and privacy")
        group.add_argument(
            "--consent_default", choices=[c.value for c in ConsentDefault], default=ConsentDefault.DENY.value,
            help="What an event without a consent object means: deny (strict) or grant. Default: deny.")
        group.add_argument(
            "--suppression_list", type=file_location, default=None,
            help="File of raw user ids to leave out (erasure requests; local path or gs://): one id per line, "
                 "'#' starts a comment line, ids with surrounding spaces or a leading '#' or '\"' as JSON strings "
                 "(README, Privacy). Default: none.")
        group.add_argument(
            "--id_key_file", type=file_location, default=None,
            help="File (local or gs://) holding the HMAC key for pseudonymising user ids; the workers read it. "
                 "Default: --id_key_secret, else the SEGMENTS_ID_KEY env var (local runners only).")
        group.add_argument(
            "--id_key_secret", default=None,
            help="Secret Manager secret version holding the HMAC key, projects/P/secrets/S/versions/V; the workers "
                 "read it. Default: none.")
        group.add_argument(
            "--demo_key", action="store_true", default=False,
            help="Use the published demo key when no key is configured, without the warning (local runners only; "
                 "refused on Dataflow). Default: local runs warn and use it; Dataflow runs need a real key.")
        group.add_argument(
            "--max_event_bytes", type=int_in(1, MAX_EVENT_BYTES), default=16 * 1024,
            help=f"Largest accepted record, in bytes (1 to {MAX_EVENT_BYTES:,}); larger ones are dead-lettered as "
                 "oversized. Default: 16384.")
        group.add_argument(
            "--max_future_skew_hours", type=float_in(MAX_HOURS), default=24.0,
            help=f"How far past now an event time may be, in hours (at most {MAX_HOURS:,}). Default: 24.")
        group.add_argument(
            "--max_event_age_days", type=float_in(36500), default=3650.0,
            help="How far before now an event time may be, in days (at most 36,500). Default: 3650.")
        group.add_argument(
            "--max_event_value", type=float_in(MAX_EVENT_VALUE_LIMIT), default=DEFAULT_MAX_EVENT_VALUE,
            help=f"Largest accepted properties.value, in the reporting currency (at most {MAX_EVENT_VALUE_LIMIT:,g}); "
                 f"larger ones are dead-lettered as value_out_of_range. Default: {DEFAULT_MAX_EVENT_VALUE:,g}.")

        profiles = parser.add_argument_group("profiles")
        profiles.add_argument(
            "--session_gap_minutes", type=float_in(7 * 24 * 60), default=30.0,
            help="Inactivity that closes a session, in minutes (at most 10,080, a week). Default: 30.")
        profiles.add_argument(
            "--reporting_currency", type=currency_code, default=DEFAULT_REPORTING_CURRENCY,
            help="Currency of every money feature; amounts are converted at the rate of their day. "
                 f"Default: {DEFAULT_REPORTING_CURRENCY}.")
        profiles.add_argument(
            "--fx_rates", default=None,
            help="Exchange-rate table, CSV date,currency,units_per_eur (local path or gs://). Default: the "
                 "table shipped in transforms/contracts/reference/fx_rates.csv.")
        profiles.add_argument(
            "--early_firing_seconds", type=int_in(1, 86_400), default=60,
            help="Streaming only: a user's profile is updated this long (processing time) after an event "
                 "arrives, in seconds (at most 86,400). Default: 60.")
        profiles.add_argument(
            "--rescore_days", type=int_in(1, MAX_DAYS), default=1,
            help="Streaming only: every user is re-scored as of every this many midnights of event time, "
                 f"silent users included (at most {MAX_DAYS:,}). Default: 1.")
        profiles.add_argument(
            "--max_silent_days", type=int_in(1, MAX_DAYS), default=730,
            help="A user silent this long before a midnight is not scored as of it, in days, in both jobs "
                 f"(streaming: their next event starts the re-scoring again; at most {MAX_DAYS:,}). Default: 730.")
        profiles.add_argument(
            "--allowed_lateness_hours", type=float_in(MAX_HOURS), default=48.0,
            help="Streaming only: how far behind the event-time clock an event may arrive and still count, in "
                 f"hours (at most {MAX_HOURS:,}); later ones are dead-lettered as too_late. Default: 48.")

        profiles.add_argument(
            "--snapshot_dir", default=None,
            help="Profile snapshots (local folder or gs://): the batch job writes every user's profile as of "
                 "--as_of under it (and then needs --as_of); the streaming job starts from the latest snapshot of "
                 "its feature version under it (transforms/features/snapshots.py). Default: none (batch writes "
                 "no snapshot; streaming starts with empty profiles).")

        model = parser.add_argument_group("model and warehouse")
        model.add_argument(
            "--model", type=file_location, default=None,
            help="Model artifact folder (local or gs://). Loading it runs code from it: use folders only the "
                 "training job can write, and pin them with --model_sha256. Default: the model shipped in "
                 "models/default.")
        model.add_argument(
            "--model_sha256", type=sha256_hex, default=None,
            help="Refuse the model unless model.joblib has this SHA-256 (its card's model_sha256). Default: the "
                 "card's digest is checked, not pinned.")
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

        letters = parser.add_argument_group("dead letters")
        letters.add_argument(
            "--dead_letter_max_payload_bytes", type=int_in(1024, MAX_PAYLOAD_BYTES), default=DEFAULT_PAYLOAD_BYTES,
            help=f"Store at most this many bytes of a dead letter's payload (1,024 to {MAX_PAYLOAD_BYTES:,}); a "
                 "longer one is stored truncated, with its full size and SHA-256. Default: 1048576.")
        letters.add_argument(
            "--dead_letter_fallback", type=file_location, default=None,
            help="Folder (local or gs://) for dead letters the warehouse refused, as JSON lines under "
                 "<folder>/<run id>/. Default: <--temp_location>/segments-fallback when set, else "
                 f"{LOCAL_FALLBACK_DIR}.")

    def id_key_ref(self):
        """Where the HMAC key is (`IdKeyRef`), checked here: the key is read once and vetted.

        A job off this machine (Dataflow, any non-local runner) refuses the demo key, a key
        shorter than `MIN_KEY_BYTES` and the SEGMENTS_ID_KEY variable (its workers cannot
        see it), with or without --demo_key. A local run without a key uses the demo key
        and warns unless --demo_key was given. The returned reference is what the graph
        holds; the workers read the key from it at setup.

        Raises:
          MissingIdKey: no usable key.
        """
        from transforms.ingest.privacy import ID_KEY_ENV, MissingIdKey, check_id_key, id_key_reference

        from apache_beam.options.pipeline_options import StandardOptions

        local = self.runs_locally()
        try:
            ref = id_key_reference(self.id_key_file, self.id_key_secret, use_demo_key=False)
        except MissingIdKey:
            if self.id_key_file or self.id_key_secret:
                raise
            if not local:
                runner = self.view_as(StandardOptions).runner
                raise MissingIdKey(f"no pseudonymisation key for a {runner} job: pass --id_key_file gs://... or "
                                   "--id_key_secret projects/P/secrets/S/versions/V (the demo key is refused off "
                                   "this machine)") from None
            if not self.demo_key:
                logging.getLogger(__name__).warning(
                    "No pseudonymisation key configured: using the published demo key (fine for generated data; "
                    "set %s, --id_key_file or --id_key_secret for real data).", ID_KEY_ENV)
            ref = id_key_reference(use_demo_key=True)
        check_id_key(ref, ref.read(), off_this_machine=not local)
        return ref

    def pseudonymisation_key(self):
        """The reference the jobs hand to `ApplyPrivacy` (see `id_key_ref`)."""
        return self.id_key_ref()

    def runs_locally(self) -> bool:
        """Whether the job's runner runs on this machine."""
        from apache_beam.options.pipeline_options import StandardOptions

        return (self.view_as(StandardOptions).runner or "DirectRunner") in LOCAL_RUNNERS

    def fallback_dir(self, run_id: str) -> str:
        """Where this run keeps what the warehouse refused: <--dead_letter_fallback>/<run id>."""
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.options.pipeline_options import GoogleCloudOptions

        base = self.dead_letter_fallback
        if not base:
            temp = self.view_as(GoogleCloudOptions).temp_location
            base = FileSystems.join(temp, "segments-fallback") if temp else LOCAL_FALLBACK_DIR
        if "://" not in base:
            base = os.path.abspath(base)
        return FileSystems.join(base, re.sub(r"[^A-Za-z0-9._-]", "_", run_id))

    def model_dir(self) -> str:
        from models import DEFAULT_MODEL_DIR

        return self.model or DEFAULT_MODEL_DIR

    def bigquery_target(self, streaming: bool = False, run_id: Optional[str] = None) -> BigQueryTarget:
        """Where the tables are: the local warehouse at --bq_endpoint, or BigQuery.

        With `run_id`, the target names its staging tables after the run and records this
        process as their owner (`transforms.bigquery.loads.StagingOwner`), and keeps refused
        dead letters under ``<fallback folder>/<run id>``.
        """
        import socket

        from apache_beam.options.pipeline_options import GoogleCloudOptions

        settings = dict(streaming=streaming, max_payload_bytes=self.dead_letter_max_payload_bytes,
                        fallback_dir=self.fallback_dir(run_id or ("streaming" if streaming else "batch")))
        if run_id:
            token = re.sub(r"[^a-z0-9]+", "_", run_id.lower()).strip("_")[:48] or "run"
            settings.update(staging_suffix=f"staging_{token}", run_id=run_id, owner_host=socket.gethostname(),
                            owner_pid=os.getpid())
        if self.warehouse == "local":
            return BigQueryTarget.local(self.bq_endpoint, self.bq_project or LOCAL_PROJECT, self.bq_dataset,
                                        **settings)
        project = self.bq_project or self.view_as(GoogleCloudOptions).project
        if not project:
            raise ValueError("--warehouse bigquery needs --bq_project or --project")
        return BigQueryTarget(project=project, dataset=self.bq_dataset, **settings)

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

    def profile_transform(self, as_of_us=None, history_days: int = 0, snapshot: bool = False, seeds=None,
                          seeded_as_of_us: Optional[int] = None) -> ComputeProfiles:
        """The per-user profile step configured by these options (arguments: see `ComputeProfiles`)."""
        return ComputeProfiles(
            self.profile_rules(),
            as_of_us=as_of_us,
            history_days=history_days,
            early_firing=dt.timedelta(seconds=self.early_firing_seconds),
            rescore_every=dt.timedelta(days=self.rescore_days),
            max_silent=dt.timedelta(days=self.max_silent_days),
            snapshot=snapshot,
            seeds=seeds,
            seeded_as_of_us=seeded_as_of_us,
        )

    def validation_config(self) -> ValidationConfig:
        return ValidationConfig(
            max_event_bytes=self.max_event_bytes,
            max_future_skew=dt.timedelta(hours=self.max_future_skew_hours),
            max_age=dt.timedelta(days=self.max_event_age_days),
            suppression_list=self.suppression_list,
            max_event_value=self.max_event_value,
            rates=RateTable.load(self.fx_rates),
            reporting_currency=self.reporting_currency,
        )


class FileInputOptions(SegmentsOptions):
    """The input of the jobs that read event files (`segments run`, `segments train`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        # Not argparse-required: Beam re-parses options internally without our flags,
        # which would then exit. The jobs and the CLI insist on it instead.
        parser.add_argument_group("input").add_argument(
            "--input", action="append", type=file_location, default=None,
            help="(Required) Event files: a path, glob or gs:// pattern; JSON lines, or Avro when it ends in .avro. "
                 "Repeatable.")


class ConfigError(ValueError):
    """A problem with what the job was asked to do (a flag, a path): reported on one line."""


def _with_deadline(call: Callable, seconds: float, what: str):
    """`call()` on a daemon thread; ConfigError when it has not answered within `seconds`.

    For calls that can hang for minutes offline (listing gs://: credentials, then retries).
    """
    import threading

    box: dict = {}

    def work():
        try:
            box["value"] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = error

    thread = threading.Thread(target=work, daemon=True, name="deadline")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise ConfigError(f"{what}: no answer within {seconds:g} s (offline, or no credentials?)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def check_inputs(patterns: Sequence[str], deadline_s: float = 20.0) -> int:
    """Checks that each input pattern matches readable files; returns how many matched.

    Raises:
      ConfigError: a pattern matches nothing, names a directory, or cannot be listed
        (a gs:// pattern offline fails within `deadline_s`).
    """
    from apache_beam.io.filesystems import FileSystems

    total = 0
    for pattern in patterns:
        if "://" not in pattern and os.path.isdir(pattern):
            raise ConfigError(f"--input {pattern} is a directory: give files or a glob, such as "
                              f"{os.path.join(pattern, '*.jsonl')}")
        try:
            matched = _with_deadline(lambda: FileSystems.match([pattern])[0].metadata_list, deadline_s,
                                     f"cannot list --input {pattern}")
        except ConfigError:
            raise
        except Exception as error:  # BeamIOError and friends: report, don't trace
            raise ConfigError(f"cannot read --input {pattern}: {str(error).splitlines()[0][:300]}") from None
        if not matched:
            raise ConfigError(f"--input {pattern} matches no file")
        total += len(matched)
    return total


def check_output_file(path: Optional[str], flag: str) -> None:
    """Checks, before any work, that a local output file can be written at `path`.

    Raises:
      ConfigError: `path` is a directory, or its folder does not exist or is not writable.
    """
    if not path or "://" in path:
        return
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is a directory: give a file path")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ConfigError(f"{flag} {path} is not writable")


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
