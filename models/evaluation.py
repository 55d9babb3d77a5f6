"""Predictive validity on a hold-out period the model never saw.

Given every user's profile as of the calibration end and what each did in the hold-out
period after it, this reports, for the customers (BG/NBD's population):

* how well P(alive) ranks "has any activity in the hold-out period": the AUC (0.5 is a
  coin, 1 is perfect);
* predicted against actual repeat purchase days in the hold-out, in total and by
  calibration frequency (x = repeat purchase days before the calibration end; 7 and more
  grouped), as in Fader, Hardie & Lee (2005), Figure 4 ("conditional expectations").

Example::

    report = evaluate_holdout(rows, {"u1": HoldoutActivity(True, 2)}, params, holdout_days=90)
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from models import bgnbd

FREQUENCY_GROUPS = 7  # x = 0..6 on their own, 7 and more together


class HoldoutActivity(NamedTuple):
    """What one user did in the hold-out period."""

    active: bool  # any event
    purchase_days: int  # UTC days with a purchase


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
    active = np.array([a.active for a in seen])
    actual = np.array([a.purchase_days for a in seen], dtype=float)
    auc = float(roc_auc_score(active, alive)) if 0 < active.sum() < len(active) else None
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
        "customers_active_in_holdout": int(active.sum()),
        "p_alive_auc": auc,
        "repeat_purchase_days": {
            "actual": total_actual,
            "predicted": total_predicted,
            "relative_error": (total_predicted - total_actual) / total_actual if total_actual else None,
        },
        "by_frequency": by_frequency,
    }


def format_holdout(report: Mapping) -> str:
    """The lines `segments train --holdout` prints."""
    auc = report["p_alive_auc"]
    totals = report["repeat_purchase_days"]
    error = totals["relative_error"]
    lines = [
        f"hold-out ({report['holdout_days']:g} days, {report['customers']:,} customers of {report['users']:,} users):",
        f"  P(alive) AUC for any activity in the hold-out: {'n/a' if auc is None else f'{auc:.3f}'} "
        f"({report['customers_active_in_holdout']:,} customers active)",
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
