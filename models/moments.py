"""The moment: what a customer is doing now, beside what kind of customer they are.

A segment is a customer's *type* (lifetime behaviour, stable from day to day). The moment
is read from the profile's recent windows (the last day, 7 and 90 days) against the
customer's own history and the population's, at every scoring, by fixed rules. Each
scoring gives exactly one moment: the first of `MOMENTS` (the precedence order) whose
rule holds. Definitions (times in days; ``silence`` = `days_since_last_event`):

==================== ==========================================================================
moment               rule
==================== ==========================================================================
checkout_friction    at least `min_unconverted_checkouts` checkout attempts without a purchase
                     (``checkout_start`` events in sessions that bought nothing) in 7 days, and
                     so many that a Poisson count at the customer's usual rate would reach
                     them with probability below `surprise`
cart_abandoned_1d    in the last day: a session with an ``add_to_cart`` and no purchase, and no
                     order that day
new_this_week        first event less than `new_days` (7) ago
came_back            active in the last 7 days after a silence longer than the lapse horizon
                     (`lapsed_ratio` x the usual gap before it, and at least `lapsed_min_days`)
browsing_more        at least `min_browsing_sessions` sessions in 7 days, and more than the
                     customer's usual rate explains (Poisson tail below `surprise`)
lapsed               silence > `lapsed_ratio` (4) x usual gap, and > `lapsed_min_days` (30)
lapsing              silence > `lapsing_ratio` (2) x usual gap
quieter_than_usual   silence > `quieter_ratio` (1.5) x usual gap
active_as_usual      none of the above
==================== ==========================================================================

The customer's own baselines are shrunk towards the population's (learned at training,
`learn_thresholds`), by the same empirical-Bayes rule as the segments' rates
(`models.representation.ShrinkRates`), so that a customer with little history is judged
mostly against the population:

* **usual gap** between active days: ``(span + m_g x G0) / (gaps + m_g)``, span = days from the
  first to the last event, gaps = lifetime active days - 1, G0 the population's pooled gap;
* **usual sessions per week**: ``7 x (sessions + m_s x S0) / (days + m_s)`` over the 90-day
  window before the last 7 days (``days`` = min(tenure, 90) - 7), S0 the population's pooled
  sessions per day;
* **usual checkout attempts without a purchase** per session, over the history before the
  last 7 days: ``(attempts + m_c x C0) / (sessions + m_c)``, C0 the population's; the count
  expected in the week is that rate x the week's sessions.

The learned values and every policy constant are kept in the model card (``moments``), so
serving applies exactly what training wrote; a card without them scores no moment. The
profile facts read (besides the model features and profile facts) are
`transforms.contracts.feature_spec.MOMENT_FACTS`.

Example::

    thresholds = learn_thresholds(training_records)
    moment, reason = moment_of(record, thresholds)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, NamedTuple, Optional

CARD_KEY = "moments"
US_PER_DAY = 86_400_000_000

CHECKOUT_FRICTION = "checkout_friction"
CART_ABANDONED_1D = "cart_abandoned_1d"
NEW_THIS_WEEK = "new_this_week"
CAME_BACK = "came_back"
BROWSING_MORE = "browsing_more"
LAPSED = "lapsed"
LAPSING = "lapsing"
QUIETER_THAN_USUAL = "quieter_than_usual"
ACTIVE_AS_USUAL = "active_as_usual"

# The precedence order: a scoring's moment is the first whose rule holds. What needs an
# action today (a broken checkout, a cart left behind) comes before how active they are.
MOMENTS: tuple[str, ...] = (CHECKOUT_FRICTION, CART_ABANDONED_1D, NEW_THIS_WEEK, CAME_BACK, BROWSING_MORE,
                            LAPSED, LAPSING, QUIETER_THAN_USUAL, ACTIVE_AS_USUAL)


class Moment(NamedTuple):
    """A scoring's moment and the figures that decided it."""

    moment: str
    reason: str


@dataclasses.dataclass(frozen=True)
class MomentThresholds:
    """The moments' thresholds: three population baselines learned at training, the rest policy.

    Attributes:
        population_gap_days: G0, the pooled mean gap between a customer's active days.
        population_sessions_per_day: S0, the pooled sessions per day of customers active in
            the 90 days (before the last 7).
        population_unconverted_per_session: C0, the pooled checkout attempts without a purchase
            per session.
        gap_prior: m_g, in gaps.
        sessions_prior_days: m_s, in days.
        checkout_prior_sessions: m_c, in sessions.
        surprise: the Poisson tail probability below which a count is more than usual.
        min_unconverted_checkouts / min_browsing_sessions: the least counts of the two rules.
        new_days, quieter_ratio, lapsing_ratio, lapsed_ratio, lapsed_min_days: see the module.
        training_shares: moment -> its share of the training rows (the reference a report
            compares with); empty when not measured.
    """

    population_gap_days: float
    population_sessions_per_day: float
    population_unconverted_per_session: float
    gap_prior: float = 1.0
    sessions_prior_days: float = 7.0
    checkout_prior_sessions: float = 5.0
    surprise: float = 0.01
    min_unconverted_checkouts: int = 2
    min_browsing_sessions: int = 3
    new_days: float = 7.0
    quieter_ratio: float = 1.5
    lapsing_ratio: float = 2.0
    lapsed_ratio: float = 4.0
    lapsed_min_days: float = 30.0
    training_shares: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def as_card(self) -> dict:
        card = dataclasses.asdict(self)
        card["training_shares"] = dict(sorted(self.training_shares.items()))
        card["precedence"] = list(MOMENTS)
        return card

    @classmethod
    def from_card(cls, card: Optional[Mapping[str, Any]]) -> Optional["MomentThresholds"]:
        """The thresholds of a card's ``moments`` section; None for a card without one."""
        if not card:
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in card.items() if k in names})


def validate(card: Any) -> list[str]:
    """Every way a card's ``moments`` section is unusable; empty when it is fine."""
    if not isinstance(card, Mapping):
        return ["moments is not an object"]
    problems = []
    for field in dataclasses.fields(MomentThresholds):
        if field.name == "training_shares":
            continue
        value = card.get(field.name, field.default)
        if value is dataclasses.MISSING or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            problems.append(f"moments.{field.name} is {value!r}, not a finite number >= 0")
    if card.get("precedence", list(MOMENTS)) != list(MOMENTS):
        problems.append(f"moments.precedence {card.get('precedence')!r} is not this code's {list(MOMENTS)}")
    return problems


def poisson_tail(k: int, mean: float) -> float:
    """P(X >= k) for X ~ Poisson(mean): 1 for k <= 0; for small k, 1 - the first k terms."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    term = math.exp(-mean)
    below = term
    for i in range(1, k):
        term *= mean / i
        below += term
    return max(0.0, 1.0 - below)


def _days(us: Optional[int]) -> Optional[float]:
    return None if us is None else us / US_PER_DAY


def _shrunk(total: float, evidence: float, prior_rate: float, prior_weight: float) -> float:
    return (total + prior_weight * prior_rate) / (max(evidence, 0.0) + prior_weight)


def usual_gap_days(record: Mapping[str, Any], t: MomentThresholds) -> float:
    """The customer's usual gap between active days, shrunk towards the population's."""
    first, last = record.get("first_seen_us"), record.get("last_event_us")
    span = 0.0 if first is None or last is None else (last - first) / US_PER_DAY
    gaps = max(int(record.get("lifetime_active_days") or 0) - 1, 0)
    return _shrunk(span, gaps, t.population_gap_days, t.gap_prior)


def usual_gap_before_week(record: Mapping[str, Any], t: MomentThresholds) -> float:
    """As `usual_gap_days`, over the history before the 7-day window (for "came back")."""
    first, last = record.get("first_seen_us"), record.get("last_event_before_7d_us")
    span = 0.0 if first is None or last is None else (last - first) / US_PER_DAY
    gaps = max(int(record.get("lifetime_active_days") or 0) - int(record.get("active_days_7d") or 0) - 1, 0)
    return _shrunk(span, gaps, t.population_gap_days, t.gap_prior)


def baseline_days(record: Mapping[str, Any]) -> float:
    """Days of the 90-day window before the last 7 that the customer existed in."""
    return max(min(float(record["tenure_days"]), 90.0) - 7.0, 0.0)


def expected_sessions_7d(record: Mapping[str, Any], t: MomentThresholds) -> float:
    """Sessions a week at the customer's usual rate (90-day window before the last 7 days)."""
    before = max(int(record.get("sessions_90d") or 0) - int(record.get("sessions_7d") or 0), 0)
    return 7.0 * _shrunk(before, baseline_days(record), t.population_sessions_per_day, t.sessions_prior_days)


def expected_unconverted_7d(record: Mapping[str, Any], t: MomentThresholds) -> float:
    """Checkout attempts without a purchase expected in the week's sessions at the customer's usual rate."""
    week = int(record.get("unconverted_checkouts_7d") or 0)
    before = max(int(record.get("lifetime_unconverted_checkouts") or 0) - week, 0)
    sessions_7d = int(record.get("sessions_7d") or 0)
    sessions_before = max(float(record.get("lifetime_sessions") or 0.0) - sessions_7d, 0.0)
    rate = _shrunk(before, sessions_before, t.population_unconverted_per_session, t.checkout_prior_sessions)
    return rate * max(sessions_7d, 1)


def moment_of(record: Mapping[str, Any], t: MomentThresholds) -> Moment:
    """The moment of one feature record (a profile snapshot with `MOMENT_FACTS`), and why."""
    silence = float(record["days_since_last_event"])
    tenure = float(record["tenure_days"])

    attempts = int(record.get("unconverted_checkouts_7d") or 0)
    if attempts >= t.min_unconverted_checkouts:
        expected = expected_unconverted_7d(record, t)
        p = poisson_tail(attempts, expected)
        if p < t.surprise:
            return Moment(CHECKOUT_FRICTION, f"7 days: {attempts} checkout attempts without a purchase, "
                                             f"{expected:.2f} expected at the usual rate (p = {p:.2g})")
    abandoned = int(record.get("abandoned_cart_sessions_1d") or 0)
    if abandoned >= 1 and int(record.get("orders_1d") or 0) == 0:
        return Moment(CART_ABANDONED_1D, f"last day: {abandoned} cart session(s) without a purchase, no order")
    if tenure < t.new_days:
        return Moment(NEW_THIS_WEEK, f"first event {tenure:.1f} days ago")
    first_week, last_before = record.get("first_event_7d_us"), record.get("last_event_before_7d_us")
    if first_week is not None and last_before is not None:
        away = (first_week - last_before) / US_PER_DAY
        usual_before = usual_gap_before_week(record, t)
        horizon = max(t.lapsed_ratio * usual_before, t.lapsed_min_days)
        if away > horizon:
            return Moment(CAME_BACK, f"back after {away:.1f} days of silence (lapsed from {horizon:.1f}: "
                                     f"usual gap {usual_before:.1f})")
    sessions = int(record.get("sessions_7d") or 0)
    if sessions >= t.min_browsing_sessions:
        expected = expected_sessions_7d(record, t)
        p = poisson_tail(sessions, expected)
        if p < t.surprise:
            return Moment(BROWSING_MORE, f"7 days: {sessions} sessions, {expected:.2f} expected at the usual "
                                         f"rate (p = {p:.2g})")
    gap = usual_gap_days(record, t)
    horizon = max(t.lapsed_ratio * gap, t.lapsed_min_days)
    if silence > horizon:
        return Moment(LAPSED, f"silent {silence:.1f} days, lapsed from {horizon:.1f} (usual gap {gap:.1f})")
    for name, ratio in ((LAPSING, t.lapsing_ratio), (QUIETER_THAN_USUAL, t.quieter_ratio)):
        if silence > ratio * gap:
            return Moment(name, f"silent {silence:.1f} days, more than {ratio:g} x the usual gap of {gap:.1f}")
    return Moment(ACTIVE_AS_USUAL, f"silent {silence:.1f} days, usual gap {gap:.1f}")


def learn_thresholds(records: Iterable[Mapping[str, Any]], **policy: Any) -> MomentThresholds:
    """The thresholds from the training rows (one feature record per user, as of the calibration end).

    G0, S0 and C0 are pooled (sum of the numerators over sum of the denominators), so a
    customer with much history weighs as much as their history; `policy` overrides the
    policy constants. The training shares are those of the rows under the thresholds.
    """
    rows = list(records)
    span = gaps = sessions = days = unconverted = lifetime_sessions = 0.0
    for r in rows:
        active = int(r.get("lifetime_active_days") or 0)
        if active >= 2 and r.get("first_seen_us") is not None and r.get("last_event_us") is not None:
            span += (r["last_event_us"] - r["first_seen_us"]) / US_PER_DAY
            gaps += active - 1
        window_days = baseline_days(r)
        if window_days > 0 and float(r.get("active_days_90d") or 0) > 0:
            sessions += max(int(r.get("sessions_90d") or 0) - int(r.get("sessions_7d") or 0), 0)
            days += window_days
        unconverted += int(r.get("lifetime_unconverted_checkouts") or 0)
        lifetime_sessions += float(r.get("lifetime_sessions") or 0.0)
    if gaps == 0 or days == 0 or lifetime_sessions == 0:
        raise ValueError("the training rows hold too little history to learn the moments' baselines "
                         f"(gaps {gaps:g}, days {days:g}, sessions {lifetime_sessions:g})")
    thresholds = MomentThresholds(span / gaps, sessions / days, unconverted / lifetime_sessions, **policy)
    counts = dict.fromkeys(MOMENTS, 0)
    for r in rows:
        counts[moment_of(r, thresholds).moment] += 1
    shares = {name: n / len(rows) for name, n in counts.items()}
    return dataclasses.replace(thresholds, training_shares=shares)
