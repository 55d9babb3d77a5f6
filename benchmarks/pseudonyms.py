"""User pseudonyms for the benchmark's DuckDB and Python-loop variants, without Beam.

`transforms.ingest.privacy` imports apache_beam (about 3 s and 60 MiB), which would be charged
to variants that do not use Beam; the HMAC itself is one line, mirrored here.
`tests/benchmarks/test_duckdb_reference.py` proves both the function and the key equal the
pipeline's (`transforms.ingest.privacy.pseudonymise`, `DEMO_ID_KEY`).
"""

from __future__ import annotations

import hashlib
import hmac

# transforms.ingest.privacy.DEMO_ID_KEY (published on purpose; the pipeline variants use it too).
BENCH_KEY = b"segments-demo-key--not-a-secret"


def pseudonymise_rows(rows: list[dict], key: bytes) -> list[dict]:
    """Replaces each row's `user_id` by `user_key` = HMAC-SHA256(key, user_id), hex, as its first field."""
    pseudonyms: dict[str, str] = {}
    for i, row in enumerate(rows):
        raw_id = row.pop("user_id")
        user_key = pseudonyms.get(raw_id)
        if user_key is None:
            user_key = pseudonyms[raw_id] = hmac.new(key, raw_id.encode("utf-8"), hashlib.sha256).hexdigest()
        rows[i] = {"user_key": user_key, **row}
    return rows
