"""Training: profile records -> clustering + RFM thresholds + BG/NBD -> artifact contents.

No Beam here: the `segments train` pipeline computes every user's profile record as of
the calibration end (`--until`) with the serving transforms, collects them, and calls
`train_model`; then `models.artifact.save_artifact(out, trained.pipeline, trained.card_fields)`.

Training rows: one per user, their profile as of `until` (the record with the latest
`as_of_us` at or before it), so the clustering, the RFM quantiles and the BG/NBD fit all
see each customer once, in the state serving will see. BG/NBD is fitted on the
customers' lifetime (x, t_x, T) measured to `until`. Rows are sorted by user_key so the
result does not depend on input order (KMeans initialisation picks rows by index).

Example::

    trained = train_model(records, until=datetime(2024, 3, 1, tzinfo=timezone.utc), truth=truth)
    print(format_report(trained.card_fields))
    save_artifact("models/default", trained.pipeline, trained.card_fields)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from sklearn.metrics import adjusted_rand_score

from models import bgnbd, clustering, drift, rfm
from models.artifact import load_artifact, load_card
from transforms.contracts.feature_spec import FEATURE_VERSION, MODEL_FEATURES, SKEWED_FEATURES, model_input_vector

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_DAY_US = 86_400_000_000


class TrainedModel(NamedTuple):
    pipeline: Any  # fitted sklearn Pipeline, ready to serialise
    card_fields: dict  # the model card without digest / model_version / library versions
    users: list[str]  # user_key of each training row
    segment_ids: np.ndarray  # segment id of each training row


def to_us(value: datetime | int | None) -> int | None:
    """datetime (naive = UTC) or epoch microseconds -> epoch microseconds."""
    if value is None or isinstance(value, int):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return (value - _EPOCH) // timedelta(microseconds=1)


def iso_us(us: int) -> str:
    return (_EPOCH + timedelta(microseconds=int(us))).isoformat().replace("+00:00", "Z")


def latest_per_user(records: Sequence[Mapping], until_us: int | None) -> list[Mapping]:
    """Per user, the record with the latest as-of time at or before `until_us`, sorted by user_key."""
    best: dict[str, Mapping] = {}
    for rec in records:
        if until_us is not None and int(rec["as_of_us"]) > until_us:
            continue
        key = (int(rec["as_of_us"]), int(rec.get("event_count") or 0))
        current = best.get(rec["user_key"])
        if current is None or key > (int(current["as_of_us"]), int(current.get("event_count") or 0)):
            best[rec["user_key"]] = rec
    return [best[user] for user in sorted(best)]


def _json_params(params: Mapping[str, Any]) -> dict:
    return {k: v for k, v in sorted(params.items()) if v is None or isinstance(v, (str, int, float, bool))}


def train_model(feature_records: Sequence[Mapping], *, until: datetime | int | None = None,
                truth: Mapping[str, str] | None = None, previous: str | None = None,
                algorithm: str = clustering.KMEANS, k_range: tuple[int, int] = clustering.DEFAULT_K_RANGE,
                seed: int = 0, silhouette_sample: int = clustering.DEFAULT_SILHOUETTE_SAMPLE,
                money: Mapping | None = None) -> TrainedModel:
    """Fits the segmentation model, the RFM thresholds and BG/NBD on the training rows.

    Args:
        feature_records: feature records (see `transforms.features.compute`), any order.
        until: the calibration end (datetime or epoch micros); None = each user's latest record.
        truth: optional {user_key: true archetype} (user keys pseudonymised as in
            the pipeline) for the adjusted Rand index.
        previous: optional previous artifact folder: its segment ids are kept
            for the clusters that match (see `models.clustering`).
        algorithm: 'kmeans' (default) or 'gmm'.
        k_range: inclusive range of k to try.
        seed: random_state of the estimator and of the silhouette sample.
        silhouette_sample: rows in the silhouette sample.
        money: what the spend features are measured in (`RateTable.card`), recorded in the card.

    Returns:
        A `TrainedModel`; save it with `models.artifact.save_artifact`.

    Raises:
        ValueError: too few rows, or no purchaser to fit BG/NBD on.
    """
    until_us = to_us(until)
    rows = latest_per_user(feature_records, until_us)
    if not rows:
        raise ValueError("no user has a profile at or before --until")
    users = [r["user_key"] for r in rows]
    X = np.array([model_input_vector(r) for r in rows], dtype=float)

    fit = clustering.fit_select_k(X, k_range=k_range, algorithm=algorithm, seed=seed,
                                  sample_size=silhouette_sample)
    previous_card = load_card(previous) if previous else None
    segments, mapping = clustering.build_segments(
        fit.pipeline, X, fit.labels, previous_segments=previous_card["segments"] if previous_card else None)
    id_of_label = {s.cluster_index: s.segment_id for s in segments}
    segment_ids = np.array([id_of_label[int(label)] for label in fit.labels])

    col = {name: i for i, name in enumerate(MODEL_FEATURES)}
    thresholds = rfm.fit_thresholds(*(X[:, col[name]] for name in rfm.RFM_FEATURES))

    inputs = np.array([bgnbd.inputs_from_record(r) for r in rows if bgnbd.is_customer(r)])
    if len(inputs) < 2:
        raise ValueError("BG/NBD needs customers in the training rows; found fewer than 2")
    params = bgnbd.fit_bgnbd(inputs[:, 0], inputs[:, 1], inputs[:, 2])

    kept_share = None
    if previous_card is not None:
        # The retrain report marketers care about: how many of these users would keep
        # the segment id the previous model gives them.
        previous_ids = load_artifact(previous).assign(X).segment_id
        kept_share = float(np.mean(previous_ids == segment_ids))

    ari, ari_users = None, 0
    if truth is not None:
        known = [i for i, user in enumerate(users) if user in truth]
        ari_users = len(known)
        if known:
            ari = float(adjusted_rand_score([truth[users[i]] for i in known], segment_ids[known]))

    distribution = training_distribution(feature_records, X, until_us,
                                         lambda M: np.array([id_of_label[int(i)] for i in fit.pipeline.predict(M)]))
    selected = fit.k_scores[fit.k]
    clustering.strip_for_serving(fit.pipeline)
    card_fields = {
        "feature_version": FEATURE_VERSION,
        "features": list(MODEL_FEATURES),
        "algorithm": {
            "name": algorithm,
            "params": _json_params(fit.pipeline[-1].get_params()),
            "preprocessing": {"log1p": [n for n in MODEL_FEATURES if n in SKEWED_FEATURES], "scaler": "standard"},
            "k_range": [int(k_range[0]), int(k_range[1])],
            "selection": "max silhouette on a fixed-seed sample (ties: smaller k)",
            "silhouette_sample": int(min(silhouette_sample, len(X))),
            "seed": int(seed),
        },
        "k": int(fit.k),
        "quality": {
            "silhouette": selected.silhouette,
            "davies_bouldin": selected.davies_bouldin,
            "k_scores": {str(k): {"silhouette": s.silhouette, "davies_bouldin": s.davies_bouldin}
                         for k, s in sorted(fit.k_scores.items())},
            "ari": ari,
            "ari_users": ari_users,
        },
        "training": {
            "data_start": iso_us(min(int(r["first_seen_us"]) for r in rows)),
            "data_end": iso_us(until_us if until_us is not None else max(int(r["as_of_us"]) for r in rows)),
            "rows": len(rows),
            "input_records": len(feature_records),
            "row_selection": "per user, the profile as of data_end (the calibration end)",
            "bgnbd_customers": int(len(inputs)),  # users with a purchase: the BG/NBD and RFM population
        },
        "money": dict(money or {}),
        "segments": [s._asdict() for s in segments],
        "segment_id_mapping": (dict(mapping.as_card(previous_card["model_version"]),
                                    users_keeping_segment_id=kept_share) if mapping else None),
        "rfm": thresholds.as_card(),
        "bgnbd": params.as_card(),
        drift.CARD_KEY: distribution,
    }
    return TrainedModel(fit.pipeline, card_fields, users, segment_ids)


def training_distribution(feature_records: Sequence[Mapping], X: np.ndarray, until_us: int | None,
                          assign) -> dict:
    """The card's ``distribution`` (`models.drift`): the training rows' bins, and the daily movement
    baseline from the records of earlier midnights when the training pipeline made them
    (``segments train --baseline_days``): each day's users scored with the fitted model."""
    by_day: dict[int, dict[str, Mapping]] = {}
    for rec in feature_records:
        as_of = int(rec["as_of_us"])
        if as_of % _DAY_US == 0 and (until_us is None or as_of <= until_us):
            by_day.setdefault(as_of, {})[rec["user_key"]] = rec
    snapshots = [(as_of, sorted(users), np.array([model_input_vector(users[u]) for u in sorted(users)], dtype=float))
                 for as_of, users in by_day.items()]
    return drift.training_distribution(X, MODEL_FEATURES, moves=drift.daily_moves(snapshots, assign))


def format_report(card: Mapping) -> str:
    """The lines `segments train` prints: k scores, the chosen k, ARI, segments, BG/NBD."""
    q = card["quality"]
    lines = [f"{'k':>3} {'silhouette':>10} {'davies_bouldin':>14}"]
    for k, s in q["k_scores"].items():
        mark = "  <- chosen" if int(k) == card["k"] else ""
        lines.append(f"{k:>3} {s['silhouette']:>10.4f} {s['davies_bouldin']:>14.4f}{mark}")
    lines.append(f"chosen k = {card['k']}: silhouette {q['silhouette']:.4f}, "
                 f"Davies-Bouldin {q['davies_bouldin']:.4f}")
    if q.get("ari") is not None:
        lines.append(f"adjusted Rand index vs true archetypes: {q['ari']:.4f} ({q['ari_users']} users)")
    for s in card["segments"]:
        lines.append(f"  segment {s['segment_id']}: {s['name']} ({s['size_share']:.1%}) - {s['description']}")
    mapping = card.get("segment_id_mapping")
    if mapping and mapping.get("users_keeping_segment_id") is not None:
        lines.append(f"segment ids kept from {mapping['previous_model_version']}: "
                     f"{mapping['users_keeping_segment_id']:.1%} of training users")
    moves = (card.get(drift.CARD_KEY) or {}).get("daily_moves")
    if moves and moves.get("share") is not None:
        lines.append(f"segment changes per day at training: {moves['share']:.2%} of users "
                     f"(mean of the last {moves['days']} days)")
    b = card["bgnbd"]
    lines.append(f"BG/NBD ({b['time_unit']}): r={b['r']:.4g} alpha={b['alpha']:.4g} a={b['a']:.4g} b={b['b']:.4g}")
    return "\n".join(lines)
