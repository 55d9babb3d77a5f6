"""Predictive validity on a hold-out period the model never saw.

Given every user's profile as of the calibration end and what each did in the hold-out
period after it, this reports, for the customers (BG/NBD's population):

* **who buys**: for the label "bought at least once in the first H days of the hold-out"
  (H = 30 and 90 days, the horizons of ``p_purchase_30d`` / ``p_purchase_90d``, and the
  whole hold-out), each score's AUC (0.5 is a coin, 1 is perfect), top-decile lift (the
  buyer rate among the 10 % ranked highest over the overall rate), its predicted against
  actual buyer rate per decile, and the Brier score (mean squared error of a probability).
  The scores: the BG/NBD purchase propensity for H (`bgnbd.p_purchase`), P(alive), the
  expected purchases in H, and the two baselines a marketer would use instead, recency only
  (fewer days since the last purchase ranks higher) and frequency only (more purchase
  days ranks higher). Baselines and P(alive) rank but are not probabilities of the label:
  no Brier score or predicted rate for them;
* predicted against actual repeat purchase days in the hold-out, in total and by
  calibration frequency (x = repeat purchase days before the calibration end; 7 and more
  grouped), as in Fader, Hardie & Lee (2005), Figure 4 ("conditional expectations").

Deciles with ties: customers are sorted by score, highest first, and cut into ten groups
of equal size; a run of equal scores that straddles a cut counts in each group in
proportion, with its mean (what random tie-breaking gives on average), so a baseline with
many ties (frequency: 60 % bought once) is neither flattered nor penalised by the order
of the rows.

Example::

    report = evaluate_holdout(rows, {"u1": HoldoutActivity(True, 2, 3.5)}, params, holdout_days=90)
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

from models import bgnbd

FREQUENCY_GROUPS = 7  # x = 0..6 on their own, 7 and more together
PROPENSITY_HORIZONS_DAYS = (30, 90)
DECILES = 10


class HoldoutActivity(NamedTuple):
    """What one user did in the hold-out period."""

    active: bool  # any event
    purchase_days: int  # UTC days with a purchase
    first_purchase_day: Optional[float] = None  # days from the hold-out start to the first purchase


def decile_means(score: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean of `values` in each tenth of the customers ranked by `score` (highest first), ties shared.

    Equal scores form one block; a block that straddles a cut point contributes to each
    decile its mean times the positions it covers there (the expectation under random
    tie-breaking).
    """
    n = len(score)
    order = np.argsort(-score, kind="stable")
    s, v = score[order], values[order].astype(float)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], n]
    block_mean = np.add.reduceat(v, starts) / (ends - starts)
    cuts = np.linspace(0.0, n, DECILES + 1)
    result = np.zeros(DECILES)
    for d in range(DECILES):
        lo, hi = cuts[d], cuts[d + 1]
        overlap = np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0.0, None)
        result[d] = float(np.dot(overlap, block_mean) / (hi - lo))
    return result


def score_report(name: str, score: np.ndarray, bought: np.ndarray, probability: bool) -> dict:
    """AUC, top-decile lift, decile table and (for a probability) Brier score of one score."""
    base = float(bought.mean())
    actual = decile_means(score, bought)
    predicted = decile_means(score, score) if probability else None
    two_classes = 0 < bought.sum() < len(bought)
    return {
        "score": name,
        "auc": float(roc_auc_score(bought, score)) if two_classes else None,
        "top_decile_lift": float(actual[0] / base) if base else None,
        "brier": float(brier_score_loss(bought, score)) if probability else None,
        "deciles": [{"decile": d + 1, "actual": float(actual[d]),
                     "predicted": None if predicted is None else float(predicted[d])} for d in range(DECILES)],
    }


def evaluate_holdout(rows: Sequence[Mapping], holdout: Mapping[str, HoldoutActivity], params: bgnbd.BgNbdParams,
                     holdout_days: float) -> dict:
    """The hold-out report (see the module docstring), as plain numbers for the model card.

    Args:
        rows: profile records as of the calibration end, one per user.
        holdout: user_key -> their hold-out activity (users absent did nothing).
        params: the BG/NBD parameters fitted on the calibration period.
        holdout_days: length of the hold-out period, in days.
    """
    customers = [r for r in rows if bgnbd.is_customer(r)]
    if not customers:
        raise ValueError("no customer in the calibration rows: nothing to evaluate")
    per_unit = bgnbd.DAYS_PER_UNIT[params.time_unit]
    inputs = np.array([bgnbd.inputs_from_record(r) for r in customers])
    x, t_x, T = inputs[:, 0], inputs[:, 1] / per_unit, inputs[:, 2] / per_unit
    alive = np.atleast_1d(bgnbd.p_alive(params, x, t_x, T))
    predicted = np.atleast_1d(bgnbd.expected_purchases(params, holdout_days / per_unit, x, t_x, T))
    seen = [holdout.get(r["user_key"], HoldoutActivity(False, 0)) for r in customers]
    actual = np.array([a.purchase_days for a in seen], dtype=float)
    first_purchase = np.array([np.inf if a.first_purchase_day is None else a.first_purchase_day for a in seen])
    recency_days = inputs[:, 2] - inputs[:, 1]
    horizons = [h for h in PROPENSITY_HORIZONS_DAYS if h <= holdout_days]
    if holdout_days not in horizons:
        horizons.append(holdout_days)
    purchases = []
    for h in horizons:
        bought = first_purchase < h
        purchases.append({
            "horizon_days": float(h),
            "label": f"bought at least once in the first {h:g} days of the hold-out",
            "buyers": int(bought.sum()),
            "buyer_rate": float(bought.mean()),
            "scores": [
                score_report(f"p_purchase_{h:g}d",
                             np.atleast_1d(bgnbd.p_purchase(params, h / per_unit, x, t_x, T)), bought, True),
                score_report("p_alive", alive, bought, False),
                score_report(f"expected_purchases_{h:g}d",
                             np.atleast_1d(bgnbd.expected_purchases(params, h / per_unit, x, t_x, T)), bought, False),
                score_report("recency_only", -recency_days, bought, False),
                score_report("frequency_only", x, bought, False),
            ],
        })
    groups = np.minimum(x, FREQUENCY_GROUPS).astype(int)
    by_frequency = []
    for g in range(FREQUENCY_GROUPS + 1):
        members = groups == g
        if members.any():
            by_frequency.append({
                "x": str(g) if g < FREQUENCY_GROUPS else f"{FREQUENCY_GROUPS}+",
                "customers": int(members.sum()),
                "actual_mean": float(actual[members].mean()),
                "predicted_mean": float(predicted[members].mean()),
            })
    total_actual, total_predicted = float(actual.sum()), float(predicted.sum())
    return {
        "holdout_days": float(holdout_days),
        "users": len(rows),
        "customers": len(customers),
        "customers_active_in_holdout": int(sum(a.active for a in seen)),
        "customers_buying_in_holdout": int(np.isfinite(first_purchase).sum()),
        "purchase_prediction": purchases,
        "repeat_purchase_days": {
            "actual": total_actual,
            "predicted": total_predicted,
            "relative_error": (total_predicted - total_actual) / total_actual if total_actual else None,
        },
        "by_frequency": by_frequency,
    }


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_holdout(report: Mapping) -> str:
    """The lines `segments train --holdout` prints."""
    totals = report["repeat_purchase_days"]
    error = totals["relative_error"]
    lines = [
        f"hold-out ({report['holdout_days']:g} days, {report['customers']:,} customers of {report['users']:,} users; "
        f"{report['customers_buying_in_holdout']:,} bought in it, {report['customers_active_in_holdout']:,} active):",
    ]
    for horizon in report["purchase_prediction"]:
        lines.append(f"  {horizon['label']}: {horizon['buyers']:,} customers ({horizon['buyer_rate']:.1%})")
        lines.append(f"    {'score':<24} {'AUC':>6} {'lift@10%':>8} {'Brier':>7}   "
                     f"actual (predicted) buyer rate, deciles 1-5")
        for s in horizon["scores"]:
            deciles = "  ".join(f"{d['actual']:.3f}" + ("" if d["predicted"] is None else f" ({d['predicted']:.3f})")
                                for d in s["deciles"][:5])
            lines.append(f"    {s['score']:<24} {_fmt(s['auc'], '6.3f')} {_fmt(s['top_decile_lift'], '8.2f')} "
                         f"{_fmt(s['brier'], '7.4f')}   {deciles}")
    lines += [
        f"  repeat purchase days: predicted {totals['predicted']:,.1f}, actual {totals['actual']:,.0f}"
        + ("" if error is None else f" ({error:+.1%})"),
        f"  {'x':>3} {'customers':>9} {'actual':>8} {'predicted':>9}",
    ]
    lines += [f"  {g['x']:>3} {g['customers']:>9,} {g['actual_mean']:>8.3f} {g['predicted_mean']:>9.3f}"
              for g in report["by_frequency"]]
    return "\n".join(lines)


# 99.9 % quantile of the chi-squared distribution with 4 degrees of freedom (scipy.stats.chi2.ppf(0.999, 4)).
RECOVERY_CRITICAL = 18.467


def bgnbd_recovery(rows: Sequence[Mapping], archetype_of: Mapping[str, str],
                   truth: Mapping[str, bgnbd.BgNbdParams]) -> list[dict]:
    """Per archetype of a generated population, BG/NBD fitted on the customers' profiles against its truth.

    Where the generator draws purchases from a BG/NBD process (per archetype), a fit on
    that archetype's customers should recover its parameters up to sampling noise. The
    tolerance is the likelihood-ratio test: with the true parameters, twice the gain in
    log-likelihood of the fit follows a chi-squared with 4 degrees of freedom, so the truth
    lies outside the 99.9 % confidence region (statistic above `RECOVERY_CRITICAL`) in one
    sample of a thousand. The region is as wide as the data allow: the purchase rate r/alpha
    is pinned tightly, a and b one by one much less (their ratio sets the dropout).

    Args:
        rows: profile records as of the calibration end.
        archetype_of: user_key -> true archetype (users absent are skipped).
        truth: archetype -> the generator's parameters.
    """
    report = []
    for name in sorted(truth):
        customers = [r for r in rows if archetype_of.get(r["user_key"]) == name and bgnbd.is_customer(r)]
        if len(customers) < 50:
            continue
        inputs = np.array([bgnbd.inputs_from_record(r) for r in customers])
        x, t_x, T = inputs[:, 0], inputs[:, 1], inputs[:, 2]
        fitted, true = bgnbd.fit_bgnbd(x, t_x, T), truth[name]
        statistic = 2.0 * float(np.sum(bgnbd.log_likelihood(fitted, x, t_x, T))
                                - np.sum(bgnbd.log_likelihood(true, x, t_x, T)))
        report.append({
            "archetype": name,
            "customers": len(customers),
            "fitted": fitted.as_card(),
            "true": true.as_card(),
            "mean_rate_ratio": (fitted.r / fitted.alpha) / (true.r / true.alpha),
            "likelihood_ratio": statistic,
            "within_99_9": statistic <= RECOVERY_CRITICAL,
        })
    return report


def format_recovery(report: Sequence[Mapping]) -> str:
    """The lines `segments train --truth` prints about BG/NBD recovery."""
    lines = [f"BG/NBD per archetype, fitted vs the generator's truth (within the 99.9 % region: "
             f"likelihood ratio <= {RECOVERY_CRITICAL}):",
             f"  {'archetype':<18} {'customers':>9} {'r':>13} {'alpha':>15} {'a':>11} {'b':>13} {'LR':>6}"]
    for g in report:
        f, t = g["fitted"], g["true"]
        lines.append(f"  {g['archetype']:<18} {g['customers']:>9,} {f['r']:>6.3g}/{t['r']:<6.3g} "
                     f"{f['alpha']:>7.4g}/{t['alpha']:<7.4g} {f['a']:>5.3g}/{t['a']:<5.3g} "
                     f"{f['b']:>6.3g}/{t['b']:<6.3g} {g['likelihood_ratio']:>6.2f}"
                     + ("" if g["within_99_9"] else "  OUTSIDE"))
    return "\n".join(lines)
