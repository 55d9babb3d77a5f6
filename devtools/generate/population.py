"""The simulated users: archetype, personal draws, time zone, consent, and their lifecycle.

Times of a user (acquisition, orders, dropout) are milliseconds after the start of
the simulated period (00:00 UTC of its first day), so a population does not depend
on the calendar date; `simulation` adds the period start.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Optional

import numpy as np

from devtools.generate.archetypes import (
    _ACTIVITY_CAP, _ACTIVITY_PARETO_ALPHA, _CURRENCIES, _CURRENCY_BY_TZ, _TZ_OFFSETS, _TZ_SHARES, _WEB_DEVICES,
    ARCHETYPE_NAMES, ARCHETYPES, CATEGORIES, CONSENT_MODES, LOCAL_OFFSET_USER_SHARE,
)
from devtools.generate.lifecycle import draw_lifecycles
from devtools.generate.randomness import _STREAM_POPULATION, stream
from devtools.generate.timestamps import format_timestamp


@dataclasses.dataclass(slots=True)
class UserProfile:
    """One simulated user: its archetype, its personal draws and its lifecycle.

    Lifecycle times are ms after the period start (see the module docstring);
    `lifecycle.draw_lifecycles` sets them.
    """

    index: int
    user_id: str
    archetype: str
    arch_index: int  # index into ARCHETYPE_NAMES
    activity: float  # browsing-rate multiplier (mean 1 over the population)
    category_cdf: list[float]  # cumulative preferences over CATEGORIES
    channel_cdf: list[float]  # cumulative session channel mix over SESSION_CHANNELS
    web_device: str
    app_device: str
    tz_offset_min: int
    local_offset_strings: bool  # RFC 3339 strings with the local offset instead of "Z"
    currency: str
    consent: Optional[dict]  # None: the user never sends a consent object
    stamp_offset_ms: int  # added to UTC to get the time written in RFC 3339 strings
    stamp_suffix: str  # "Z" or the "+hh:mm" offset of the RFC 3339 strings
    purchase_rate: float = 0.0  # lambda, purchases per day while alive
    dropout_probability: float = 0.0  # p, chance of leaving after each repeat purchase
    acquired_ms: int = 0  # first visit (with the sign-up)
    orders_ms: list[int] = dataclasses.field(default_factory=list)  # order times, ascending
    dropped_out_ms: Optional[int] = None  # no event after this time; None: alive at the period end
    sessions: int = 0  # session counter (session ids)
    orders: int = 0  # order counter (order ids)

    @property
    def first_purchase_ms(self) -> Optional[int]:
        return self.orders_ms[0] if self.orders_ms else None


def _user_width(users: int) -> int:
    return max(6, len(str(users - 1)))


def sample_population(users: int, days: int, seed: int, *, holdout_days: int = 0) -> list[UserProfile]:
    """Draws the users: archetype quotas, activity, preferences, time zone, consent, lifecycle.

    Archetypes are assigned by exact quotas (largest remainder of `weight * users`,
    so each count is within one of its expected value) in a seeded random order.

    Args:
      users: number of users.
      days: length of the calibration period in days (users arrive in its first 80 %).
      seed: random seed.
      holdout_days: days simulated after the calibration period.

    Returns:
      The users, with lifecycles over `days + holdout_days` days.
    """
    rng = stream(seed, _STREAM_POPULATION)
    weights = np.array([a.weight for a in ARCHETYPES.values()])
    weights = weights / weights.sum()
    exact = weights * users
    counts = np.floor(exact).astype(int)
    remainder_order = np.argsort(-(exact - counts), kind="stable")
    counts[remainder_order[: users - counts.sum()]] += 1
    labels = rng.permutation(np.repeat(np.arange(len(weights)), counts))

    pareto = (1.0 - rng.random(users)) ** (-1.0 / _ACTIVITY_PARETO_ALPHA)
    activity = np.minimum(pareto / (_ACTIVITY_PARETO_ALPHA / (_ACTIVITY_PARETO_ALPHA - 1.0)), _ACTIVITY_CAP)
    tz = rng.choice(_TZ_OFFSETS, size=users, p=_TZ_SHARES / _TZ_SHARES.sum())
    local_strings = rng.random(users) < LOCAL_OFFSET_USER_SHARE
    consent_u = rng.random(users)
    analytics_u = rng.random(users)
    device_u = rng.random((users, 2))
    currency_u = rng.random(users)
    width = _user_width(users)
    granted_share = CONSENT_MODES[0][1]
    no_personalization_share = CONSENT_MODES[1][1]

    population = []
    for i in range(users):
        name = ARCHETYPE_NAMES[labels[i]]
        arch = ARCHETYPES[name]
        prefs = rng.dirichlet(np.full(len(CATEGORIES), arch.category_alpha))
        mix = rng.dirichlet(np.array(arch.channels) * 40.0 + 1e-3)
        web_device = _WEB_DEVICES[min(2, bisect.bisect_right(np.cumsum(arch.devices).tolist(),
                                                             device_u[i, 0] * sum(arch.devices)))]
        app_device = "tablet" if device_u[i, 1] < 0.15 else "mobile"
        tz_i = int(tz[i])
        currency = _CURRENCY_BY_TZ[tz_i] if currency_u[i] < 0.9 else _CURRENCIES[int(currency_u[i] * 1000) % 3]
        if consent_u[i] < granted_share:
            consent: Optional[dict] = {"analytics": True, "personalization": True}
        elif consent_u[i] < granted_share + no_personalization_share:
            consent = {"analytics": bool(analytics_u[i] < 0.7), "personalization": False}
        else:
            consent = None
        population.append(UserProfile(
            index=i, user_id=f"u-{i:0{width}d}", archetype=name, arch_index=int(labels[i]),
            activity=float(activity[i]), category_cdf=np.cumsum(prefs).tolist(),
            channel_cdf=np.cumsum(mix / mix.sum()).tolist(), web_device=web_device, app_device=app_device,
            tz_offset_min=tz_i, local_offset_strings=bool(local_strings[i]), currency=currency, consent=consent,
            stamp_offset_ms=tz_i * 60_000 if local_strings[i] else 0,
            stamp_suffix=format_timestamp(0, tz_i, not local_strings[i])[23:],
        ))
    draw_lifecycles(population, days, holdout_days, seed)
    return population
