"""The BigQuery tables: schemas and layouts, declared once, here.

Everything that touches the warehouse derives from the constants in this module:
Beam's `WriteToBigQuery` gets `beam_schema(...)`, the local sink and
`transforms.bigquery.admin` create tables from `schema_fields(...)`, the DDL in
`templates/bigquery/ddl/*.sql` is generated from them (`templates/generate.py`, checked
by a test), and `transforms.bigquery.rows.validate_row` checks every row against them
before it is written.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping, Sequence

from transforms.contracts.feature_spec import MODEL_FEATURES, PROFILE_FACTS

REQUIRED = "REQUIRED"
NULLABLE = "NULLABLE"
REPEATED = "REPEATED"

# A field is the BigQuery REST representation (`TableFieldSchema`): name, type, mode, fields.
Field = Mapping[str, Any]


def _f(name: str, type_: str, mode: str = NULLABLE, fields: Sequence[Field] = ()) -> dict:
    field: dict[str, Any] = {"name": name, "type": type_, "mode": mode}
    if fields:
        field["fields"] = [dict(f) for f in fields]
    return field


class Table(str, enum.Enum):
    """The tables of the segments dataset."""

    SEGMENT_ASSIGNMENTS = "segment_assignments"
    DEAD_LETTERS = "dead_letters"
    RUN_AUDIT = "run_audit"
    ERASURE_AUDIT = "erasure_audit"
    SEGMENT_CHANGES = "segment_changes"
    SHADOW_MOVES = "shadow_moves"


# The features RECORD is derived from the model-input contract, never retyped.
FEATURES_FIELDS: tuple[dict, ...] = tuple(_f(name, "FLOAT64") for name in MODEL_FEATURES)
# The profile facts, from the same contract: `_us` fields become TIMESTAMPs without the suffix.
PROFILE_FIELDS: tuple[dict, ...] = tuple(_f(name.removesuffix("_us"), kind) for name, kind in PROFILE_FACTS.items())

RFM_FIELDS: tuple[dict, ...] = (
    _f("r", "INT64"),  # 1-5; 0 for a prospect (no purchase yet)
    _f("f", "INT64"),
    _f("m", "INT64"),
    _f("rfm_segment", "STRING"),
)

SEGMENT_ASSIGNMENTS_SCHEMA: tuple[dict, ...] = (
    _f("row_key", "STRING", REQUIRED),  # sha256(user_key, score_date, model_version)
    _f("user_key", "STRING", REQUIRED),
    _f("score_date", "DATE", REQUIRED),  # the UTC day this scoring describes: DATE(as_of - 1 microsecond)
    _f("as_of", "TIMESTAMP", REQUIRED),  # the profile read every event before this time, none after
    _f("is_final", "BOOL", REQUIRED),  # as_of is the end of score_date: the day's last word
    _f("scoring", "STRING", REQUIRED),  # daily (the clock passed a midnight) | event (the user acted)
    _f("segment_id", "INT64", REQUIRED),
    _f("segment_name", "STRING", REQUIRED),
    _f("distance", "FLOAT64"),
    _f("margin", "FLOAT64"),
    _f("rfm", "RECORD", NULLABLE, RFM_FIELDS),
    _f("p_alive", "FLOAT64"),  # NULL for a prospect: BG/NBD describes customers
    _f("expected_purchases_30d", "FLOAT64"),
    _f("p_purchase_30d", "FLOAT64"),  # P(at least one purchase in the next 30 days)
    _f("p_purchase_90d", "FLOAT64"),
    _f("churn_risk", "FLOAT64"),  # P(no purchase in the next 90 days) = 1 - p_purchase_90d
    _f("features", "RECORD", NULLABLE, FEATURES_FIELDS),
    _f("profile", "RECORD", NULLABLE, PROFILE_FIELDS),
    _f("feature_version", "STRING", REQUIRED),
    _f("model_version", "STRING", REQUIRED),
    _f("event_count", "INT64", REQUIRED),  # the user's events before as_of
    _f("moment", "STRING"),  # what the user is doing now (models/moments.py); NULL: the model has no moments
    _f("moment_reason", "STRING"),  # the window figures that decided the moment
    _f("content_sha256", "STRING", REQUIRED),  # every column above but row_key: what a rerun compares
    _f("assigned_at", "TIMESTAMP", REQUIRED),  # processing time, separate from event time
)

DEAD_LETTERS_SCHEMA: tuple[dict, ...] = (
    _f("raw_payload", "STRING", REQUIRED),  # the payload, or its first bytes when payload_truncated
    _f("payload_encoding", "STRING", REQUIRED),  # utf8 | base64
    _f("error_code", "STRING", REQUIRED),  # an outcomes.ErrorCode value
    _f("error_detail", "STRING"),
    _f("source", "STRING", REQUIRED),
    _f("stage", "STRING", REQUIRED),  # an outcomes.Stage value
    _f("processing_time", "TIMESTAMP", REQUIRED),
    _f("run_id", "STRING"),
    _f("payload_bytes", "INT64"),  # size of the whole payload as received
    _f("payload_sha256", "STRING"),  # hex SHA-256 of the whole payload as received
    _f("payload_truncated", "BOOL"),  # raw_payload holds only the first bytes
)

RUN_AUDIT_SCHEMA: tuple[dict, ...] = (
    _f("run_id", "STRING", REQUIRED),
    _f("started_at", "TIMESTAMP"),
    _f("finished_at", "TIMESTAMP"),
    _f("mode", "STRING"),  # batch | streaming
    _f("input", "STRING"),
    _f("read", "INT64"),
    _f("valid", "INT64"),
    _f("duplicates", "INT64"),
    _f("filtered", "RECORD", REPEATED, (_f("reason", "STRING"), _f("count", "INT64"))),
    _f("dead_lettered", "RECORD", REPEATED, (_f("code", "STRING"), _f("count", "INT64"))),
    _f("reconciled", "BOOL"),
    _f("assignments", "INT64"),
    _f("model_version", "STRING"),
    _f("status", "STRING"),  # succeeded | failed | interrupted | killed
    _f("detail", "STRING"),  # what went wrong, one line
    # Per table: rows the run produced, rows loaded, rows refused that became dead letters
    # (or, for dead letters and audit rows, were kept in the fallback folder).
    # (Field names avoid SQL keywords such as `table`: the local warehouse does not quote them.)
    _f("writes", "RECORD", REPEATED, (_f("table_name", "STRING"), _f("produced", "INT64"), _f("written", "INT64"),
                                       _f("dead_lettered", "INT64"), _f("kept_in_fallback", "INT64"))),
    _f("fallback", "STRING"),  # where refused rows were kept, when any were
    # Drift of the model's input against its training distribution (models.drift): the rows
    # compared (batch: every user as of the run's as_of; streaming: the interval's midnight
    # re-scorings), the largest population stability index, and the features with the largest.
    _f("drift_rows", "INT64"),
    _f("drift_max_psi", "FLOAT64"),
    _f("drift", "RECORD", REPEATED, (_f("feature", "STRING"), _f("psi", "FLOAT64"))),
)

ERASURE_AUDIT_SCHEMA: tuple[dict, ...] = (
    _f("erasure_id", "STRING", REQUIRED),
    _f("erased_at", "TIMESTAMP", REQUIRED),
    _f("users", "INT64", REQUIRED),  # user ids in the request
    _f("user_keys", "STRING", REPEATED),  # their pseudonyms (never the raw ids)
    _f("deleted", "RECORD", REPEATED, (_f("table_name", "STRING"), _f("row_count", "INT64"))),
    _f("suppression_list", "STRING"),  # the list the ids were appended to
    _f("suppression_added", "INT64"),  # ids that were not on it yet
)


SHADOW_DRIVER_FIELDS: tuple[dict, ...] = (
    _f("feature", "STRING", REQUIRED),
    _f("value", "FLOAT64"),  # the user's value
    _f("current_centroid", "FLOAT64"),  # the centre of the user's current segment (original units)
    _f("candidate_centroid", "FLOAT64"),  # the centre of the candidate's segment (original units)
    _f("contribution", "FLOAT64"),  # (z - current centre)^2 - (z - candidate centre)^2, candidate's scaled space
)

SHADOW_MOVES_SCHEMA: tuple[dict, ...] = (
    _f("shadow_id", "STRING", REQUIRED),  # <score_date>:<current model version>:<candidate model version>
    _f("user_key", "STRING", REQUIRED),
    _f("score_date", "DATE", REQUIRED),  # the day of the segment_assignments rows both models scored
    _f("as_of", "TIMESTAMP", REQUIRED),  # the rows' scoring time
    _f("current_model_version", "STRING", REQUIRED),
    _f("candidate_model_version", "STRING", REQUIRED),
    _f("current_segment_id", "INT64", REQUIRED),
    _f("current_segment_name", "STRING", REQUIRED),
    _f("candidate_segment_id", "INT64", REQUIRED),
    _f("candidate_segment_name", "STRING", REQUIRED),
    _f("moved", "BOOL", REQUIRED),  # the candidate gives another segment id
    _f("drivers", "RECORD", REPEATED, SHADOW_DRIVER_FIELDS),  # the features driving a move (movers only)
    _f("created_at", "TIMESTAMP", REQUIRED),  # processing time of the comparison
)


DEAD_LETTER_RETENTION_DAYS = 30


SCORES_FIELDS: tuple[dict, ...] = (
    _f("distance", "FLOAT64"),
    _f("margin", "FLOAT64"),
    _f("p_alive", "FLOAT64"),
    _f("churn_risk", "FLOAT64"),
    _f("expected_purchases_30d", "FLOAT64"),
    _f("rfm_r", "INT64"),
    _f("rfm_f", "INT64"),
    _f("rfm_m", "INT64"),
)

DRIVER_FIELDS: tuple[dict, ...] = (
    _f("feature", "STRING", REQUIRED),
    _f("before", "FLOAT64"),  # NULL: unknown; for "entered", the population centre's value
    _f("after", "FLOAT64", REQUIRED),
    _f("contribution", "FLOAT64"),  # (z - from centroid)^2 - (z - to centroid)^2, scaled space; NULL for rfm
)

SEGMENT_CHANGES_SCHEMA: tuple[dict, ...] = (
    _f("change_key", "STRING", REQUIRED),  # sha256(user_key, model_version, as_of)
    _f("user_key", "STRING", REQUIRED),
    _f("kind", "STRING", REQUIRED),  # entered | segment | moment | rfm (transforms.changes)
    _f("score_date", "DATE", REQUIRED),  # as in segment_assignments: DATE(as_of - 1 microsecond)
    _f("as_of", "TIMESTAMP", REQUIRED),  # the scoring that changed
    _f("previous_as_of", "TIMESTAMP"),  # the scoring before it; NULL for entered
    _f("scoring", "STRING"),  # daily | event
    _f("model_version", "STRING", REQUIRED),
    _f("from_segment_id", "INT64"),  # NULL for entered
    _f("from_segment_name", "STRING"),
    _f("to_segment_id", "INT64", REQUIRED),
    _f("to_segment_name", "STRING", REQUIRED),
    _f("from_rfm_segment", "STRING"),
    _f("to_rfm_segment", "STRING"),
    _f("from_moment", "STRING"),  # NULL for entered
    _f("to_moment", "STRING"),
    _f("moment_reason", "STRING"),  # why the new scoring has its moment
    _f("scores", "RECORD", NULLABLE, SCORES_FIELDS),  # of the new scoring
    _f("drivers", "RECORD", REPEATED, DRIVER_FIELDS),  # the features that moved the user most
    _f("event_count", "INT64", REQUIRED),  # the user's events before as_of
    _f("content_sha256", "STRING", REQUIRED),  # every column above but change_key
    _f("detected_at", "TIMESTAMP", REQUIRED),  # processing time, separate from event time
)


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """A table: its schema and physical layout.

    Attributes:
        table: which table.
        schema: the fields (REST representation, with modes).
        partition_field: TIMESTAMP or DATE column of DAY time partitioning, or None.
        clustering: clustering columns, in order.
        merge_key: column that identifies a row across reruns; writes MERGE on it
            instead of appending. None means append-only.
        description: table description.
        partition_expiration_days: partitions older than this are deleted by BigQuery
            (retention); None keeps them.
    """

    table: Table
    schema: tuple[dict, ...]
    partition_field: str | None
    clustering: tuple[str, ...]
    merge_key: str | None
    description: str
    partition_expiration_days: int | None = None

    @property
    def name(self) -> str:
        return self.table.value


TABLES: dict[Table, TableSpec] = {
    Table.SEGMENT_ASSIGNMENTS: TableSpec(
        Table.SEGMENT_ASSIGNMENTS,
        SEGMENT_ASSIGNMENTS_SCHEMA,
        partition_field="score_date",
        clustering=("segment_id", "user_key"),
        merge_key="row_key",
        description="One row per user, day and model version: the user's segment as of the latest scoring of "
                    "that day, with the scores and the profile behind it.",
    ),
    Table.DEAD_LETTERS: TableSpec(
        Table.DEAD_LETTERS,
        DEAD_LETTERS_SCHEMA,
        partition_field="processing_time",
        clustering=(),
        merge_key=None,
        description="Records that could not be processed, byte-exact, with the reason.",
        # Payloads hold raw user ids: keep them only as long as repairing producers takes.
        partition_expiration_days=DEAD_LETTER_RETENTION_DAYS,
    ),
    Table.RUN_AUDIT: TableSpec(
        Table.RUN_AUDIT,
        RUN_AUDIT_SCHEMA,
        partition_field=None,
        clustering=(),
        merge_key=None,
        description="One row per batch run or streaming interval, with the reconciliation counts.",
    ),
    Table.ERASURE_AUDIT: TableSpec(
        Table.ERASURE_AUDIT,
        ERASURE_AUDIT_SCHEMA,
        partition_field=None,
        clustering=(),
        merge_key=None,
        description="One row per erasure (segments erase): pseudonyms and counts, never raw ids.",
    ),
    Table.SEGMENT_CHANGES: TableSpec(
        Table.SEGMENT_CHANGES,
        SEGMENT_CHANGES_SCHEMA,
        partition_field="score_date",
        clustering=("user_key",),
        merge_key="change_key",
        description="One row per segment change of a user (entered, moved segment, changed moment, or changed "
                    "named RFM segment), with the features that moved the user most.",
    ),
    Table.SHADOW_MOVES: TableSpec(
        Table.SHADOW_MOVES,
        SHADOW_MOVES_SCHEMA,
        partition_field="score_date",
        clustering=("shadow_id", "moved"),
        merge_key=None,  # a rerun of the same comparison replaces its rows (segments shadow)
        description="One row per user scored by a shadow comparison (segments shadow): the segment of the current "
                    "model and of a candidate, and the features driving a move. Assignments are not changed.",
    ),
}


# ----------------------------------------------------------------------------- derivations


def beam_schema(spec: TableSpec) -> dict:
    """The schema in the form `beam.io.WriteToBigQuery(schema=...)` accepts."""
    return {"fields": [dict(f) for f in spec.schema]}


def schema_fields(spec: TableSpec):
    """The schema as `google.cloud.bigquery.SchemaField`s."""
    from google.cloud import bigquery

    return [bigquery.SchemaField.from_api_repr(dict(f)) for f in spec.schema]


def additional_bq_parameters(spec: TableSpec) -> dict:
    """Partitioning and clustering in the `tables.insert` form (for CREATE_IF_NEEDED)."""
    params: dict[str, Any] = {}
    if spec.partition_field:
        params["timePartitioning"] = {"type": "DAY", "field": spec.partition_field}
        if spec.partition_expiration_days:
            params["timePartitioning"]["expirationMs"] = str(spec.partition_expiration_days * 86_400_000)
    if spec.clustering:
        params["clustering"] = {"fields": list(spec.clustering)}
    return params
