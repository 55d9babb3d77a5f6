"""`segments report`: one self-contained HTML page on the segments, for the people who act on them.

    segments report --out report.html [--from 2026-11-01] [--to 2026-11-30] [--model DIR]

Sections: segment sizes over time, each segment's profile, movements between segments and
why, drift against the training data, data health (runs and dead letters), and the latest
comparison with a candidate model (`segments shadow`). Numbers come from the warehouse (the
local one, or BigQuery with ``--warehouse bigquery``) and the model card
(`devtools.report.gather`); the page embeds its charts as SVG and needs no network
(`devtools.report.page`).

    from devtools.report import write_report
    summary = write_report(client, project, "segments", "models/default", "report.html")
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Callable, Optional

from devtools.report.gather import ReportError


def write_report(client, project: str, dataset: str, model_dir: str, out: str, start: Optional[dt.date] = None,
                 end: Optional[dt.date] = None, model_sha256: Optional[str] = None,
                 say: Callable[[str], None] = lambda line: None) -> dict:
    """Gathers the numbers, renders the page to `out`; returns the gathered data.

    Raises:
        ReportError: nothing of the model in the dataset, or an empty range.
        ArtifactError: the model card cannot be read, or the model file does not match it or
            `model_sha256`.
    """
    from devtools.report import gather, page
    from models.artifact import verified_card

    card = verified_card(model_dir, expected_sha256=model_sha256)
    processed_until = end
    start, end = gather.date_range(client, project, dataset, card["model_version"], start, end)
    say(f"reading {project}.{dataset} for model {card['model_version']}, score dates {start} to {end}, runs "
        f"{'from ' + str(start) + ' to ' + str(processed_until) if processed_until else 'since ' + str(start)} ...")
    data = gather.gather(client, project, dataset, card, start, end, model_dir=model_dir,
                         processed_until=processed_until)
    say("drawing the charts ...")
    html = page.render(data)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        handle.write(html)
    return data


__all__ = ["ReportError", "write_report"]
