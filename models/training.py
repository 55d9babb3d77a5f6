"""Training: profile records -> clustering + RFM thresholds + BG/NBD -> artifact contents.

No Beam here: the `segments train` pipeline computes every user's profile record as of
the calibration end (`--until`) with the serving transforms, collects them, and calls
`train_model`; then `models.artifact.save_artifact(out, trained.model, trained.card_fields)`.

Training rows: one per user, their profile as of `until` (the record with the latest
`as_of_us` at or before it), so the clustering, the RFM quantiles and the BG/NBD fit all
see each customer once, in the state serving will see. BG/NBD is fitted on the
customers' lifetime (x, t_x, T) measured to `until`. Rows are sorted by user_key so the
result does not depend on input order (KMeans initialisation picks rows by index).

Example::

    trained = train_model(records, until=datetime(2024, 3, 1, tzinfo=timezone.utc), truth=truth)
    print(format_report(trained.card_fields))
    save_artifact("models/default", trained.model, trained.card_fields)
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from models import bgnbd, clustering, drift, k_selection, moments, rfm, segment_quality
from models.artifact import LoadedModel
from models.handler import SCORE_DEFINITIONS
from models.representation import (MIN_BEHAVIOUR_FEATURES, MIN_EVIDENCE, PRIOR_WEIGHTS, PURCHASE_FEATURES,
                                   SCANT_EVIDENCE_SHARE, behaviour_columns, unused_features)
from transforms.contracts.feature_spec import (FEATURE_VERSION, MODEL_FEATURES, RATE_EVIDENCE, SKEWED_FEATURES,
                                               model_input_vector)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_DAY_US = 86_400_000_000


class TrainedModel(NamedTuple):
    model: clustering.SegmentModel  # fitted, ready to serialise
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
                truth: Mapping[str, str] | None = None, previous: LoadedModel | None = None,
                algorithm: str = clustering.algorithms.KMEANS, k: int | None = None,
                k_range: tuple[int, int] = clustering.DEFAULT_K_RANGE, seed: int = 0,
                activity_weight: float = 0.0, silhouette_sample: int = clustering.DEFAULT_SILHOUETTE_SAMPLE,
                stability_rounds: int = k_selection.STABILITY_ROUNDS, money: Mapping | None = None) -> TrainedModel:
    """Fits the segmentation model, the RFM thresholds and BG/NBD on the training rows.

    Args:
        feature_records: feature records (see `transforms.features.compute`), any order.
        until: the calibration end (datetime or epoch micros); None = each user's latest record.
        truth: optional {user_key: true archetype} (user keys pseudonymised as in
            the pipeline): the card then reports the ARI, the supervised ceiling and their ratio.
        previous: optional previous model, loaded (and verified) by `models.artifact.load_artifact`:
            its segment ids are kept for the segments that match (see `models.clustering`).
        algorithm: one of `models.algorithms.ALGORITHMS` ('kmeans' by default).
        k: the number of segments; None = chosen in `k_range` (`models.k_selection`).
        k_range: inclusive range of k to try.
        seed: random_state of the estimators and of every sample.
        activity_weight: weight of the activity block in the model space (0: left out).
        silhouette_sample: rows in the silhouette sample.
        stability_rounds: half-sample splits per candidate k.
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
    # Inputs the data do not carry stay out of the segments, their names and descriptions.
    unused = unused_features(X)

    fit = clustering.fit_segments(X, algorithm=algorithm, k=k, k_range=k_range, seed=seed,
                                  activity_weight=activity_weight, sample_size=silhouette_sample,
                                  stability_rounds=stability_rounds, unused=tuple(unused))
    previous_card = previous.card if previous is not None else None
    segments, mapping = clustering.build_segments(
        fit, X, previous_segments=previous_card["segments"] if previous_card else None)
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
        previous_ids = previous.assign(X).segment_id
        kept_share = float(np.mean(previous_ids == segment_ids))

    quality = {**fit.quality.as_card(),
               "k_scores": {str(kk): s.as_card() for kk, s in sorted(fit.k_scores.items())},
               "unclassified_share": float(np.mean(fit.labels == clustering.algorithms.UNCLASSIFIED))}
    if truth is not None:
        quality.update(segment_quality.truth_report(fit.Z, segment_ids, fit.labels, users, truth, seed=seed))

    distribution = training_distribution(feature_records, X, until_us,
                                         lambda M: np.array([id_of_label[int(i)] for i in fit.model.assign(M)[0]]))
    model = clustering.strip_for_serving(fit.model)
    representation = model.representation
    card_fields = {
        "feature_version": FEATURE_VERSION,
        "features": list(MODEL_FEATURES),
        "algorithm": {
            "name": algorithm,
            "predictor": type(model.predictor).__name__,
            "params": _json_params(model.predictor.get_params()),
            "representation": {
                "clustering_features": list(model.features),
                "unused_features": dict(unused),
                "unused_rule": (f"left out: constant over the training users, or a rate whose evidence is below "
                                f"{MIN_EVIDENCE:g} for more than {SCANT_EVIDENCE_SHARE:.0%} of them; with fewer "
                                f"than {MIN_BEHAVIOUR_FEATURES} behaviour inputs left, the purchase figures "
                                f"{', '.join(PURCHASE_FEATURES)} are clustered instead"),
                "purchase_figures_clustered": any(n in behaviour_columns(tuple(unused)) for n in PURCHASE_FEATURES),
                "shrinkage": {"priors": dict(representation.named_steps["shrink"].priors_),
                              "prior_weights": dict(PRIOR_WEIGHTS),
                              "evidence": {rate: list(e) for rate, e in RATE_EVIDENCE.items()}},
                "log1p": [n for n in model.features if n in SKEWED_FEATURES],
                "scaler": "standard",
                "whitening": "pooled within-segment covariance^-1/2 of the k-means segments"
                             + (", projected on its k - 1 principal directions" if algorithm == "density" else ""),
                "activity_weight": float(activity_weight),
            },
            "k_range": None if k is not None else [int(k_range[0]), int(k_range[1])],
            "k_given": k is not None,
            "selection": ("given (--k)" if k is not None else
                          "max stability x silhouette in the model space (ties: smaller k)"
                          + ("; k-means candidates: the density clustering's model space" if algorithm == "density"
                             else "")),
            "silhouette_sample": int(min(silhouette_sample, len(X))),
            "stability_rounds": int(stability_rounds),
            "seed": int(seed),
        },
        "k": int(fit.k),
        "segment_count": len(segments),
        "quality": quality,
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
        "scores": {"propensity_model": "bgnbd", "definitions": dict(SCORE_DEFINITIONS)},
        drift.CARD_KEY: distribution,
    }
    try:
        card_fields[moments.CARD_KEY] = moments.learn_thresholds(rows).as_card()
    except ValueError as e:  # a card without them scores no moment: better than invented baselines
        logging.warning("no moments in the model card: %s", e)
    return TrainedModel(model, card_fields, users, segment_ids)


def _number(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


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
    """The lines `segments train` prints: k scores, the chosen k, quality, segments, BG/NBD."""
    q = card["quality"]
    lines = [f"{'k':>3} {'stability':>9} {'silhouette':>10} {'score':>7} {'davies_bouldin':>14}"]
    for k, s in q["k_scores"].items():
        mark = "  <- chosen" if int(k) == card["k"] else ""
        lines.append(f"{k:>3} {_number(s['stability'], '>9.4f')} {_number(s['silhouette'], '>10.4f')} "
                     f"{_number(s['score'], '>7.4f')} {_number(s['davies_bouldin'], '>14.4f')}{mark}")
    algorithm = card["algorithm"]["name"]
    lines.append(f"{algorithm}, k = {card['k']}{' (given)' if card['algorithm'].get('k_given') else ''}: "
                 f"{card['segment_count']} segments; stability {_number(q['stability'], '.4f')}, "
                 f"silhouette {_number(q['silhouette'], '.4f')}, Davies-Bouldin {_number(q['davies_bouldin'], '.4f')}")
    if q.get("unclassified_share"):
        lines.append(f"unclassified: {q['unclassified_share']:.1%} of training users")
    if q.get("ari") is not None:
        line = f"adjusted Rand index vs true archetypes: {q['ari']:.4f} ({q['ari_users']} users)"
        if q.get("supervised_ceiling") is not None:
            line += (f"; supervised ceiling {q['supervised_ceiling']:.4f}, ratio "
                     f"{_number(q['ratio_to_ceiling'], '.2f')}")
        if q.get("ari_classified") is not None:
            line += f"; {q['ari_classified']:.4f} on the {q['classified_users']} classified users"
        lines.append(line)
    representation = card["algorithm"].get("representation", {})
    unused = representation.get("unused_features")
    if unused:
        lines.append(f"left out ({len(unused)} inputs the data do not carry): " + ", ".join(sorted(unused)))
    if representation.get("purchase_figures_clustered"):
        lines.append("too few behaviour inputs: segments found on purchase frequency, recency and value")
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
    m = card.get(moments.CARD_KEY)
    if m:
        shares = ", ".join(f"{name} {share:.1%}" for name, share in
                           sorted(m["training_shares"].items(), key=lambda kv: -kv[1]) if share > 0)
        lines.append(f"moments: usual gap {m['population_gap_days']:.3g} days, "
                     f"{m['population_sessions_per_day']:.3g} sessions a day, "
                     f"{m['population_unconverted_per_session']:.3g} unconverted checkouts a session; "
                     f"at training: {shares}")
    b = card["bgnbd"]
    lines.append(f"BG/NBD ({b['time_unit']}): r={b['r']:.4g} alpha={b['alpha']:.4g} a={b['a']:.4g} b={b['b']:.4g}")
    scores = card.get("scores")
    if scores:
        lines.append(f"p_purchase_30d / p_purchase_90d scored by {scores['propensity_model']}; "
                     f"churn_risk = {scores['definitions']['churn_risk']}")
    return "\n".join(lines)
