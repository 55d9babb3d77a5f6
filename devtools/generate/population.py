"""The simulated users: archetype, personal draws, time zone, consent."""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Optional

import numpy as np

from devtools.generate.archetypes import (
    _ACTIVITY_CAP, _ACTIVITY_PARETO_ALPHA, _CURRENCIES, _CURRENCY_BY_TZ, _TZ_OFFSETS, _TZ_SHARES, _WEB_DEVICES,
    ARCHETYPE_NAMES, ARCHETYPES, CATEGORIES, CONSENT_MODES, LOCAL_OFFSET_USER_SHARE,
)
from devtools.generate.randomness import _STREAM_POPULATION
from devtools.generate.timestamps import format_timestamp

@dataclasses.dataclass(slots=True)
class UserProfile:
    """One simulated user: its archetype and its personal draws."""

    index: int
    user_id: str
    archetype: str
    activity: float  # session-rate multiplier (mean 1 over the population)
    active_from_day: int  # first active day index (inclusive)
    active_until_day: int  # last active day index (exclusive)
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
    sessions: int = 0
    signed_up: bool = False


def _user_width(users: int) -> int:
    return max(6, len(str(users - 1)))


def sample_population(users: int, days: int, seed: int) -> list[UserProfile]:
    """Draws the users: archetype quotas, activity, preferences, time zone, consent.

    Archetypes are assigned by exact quotas (largest remainder of `weight * users`,
    so each count is within one of its expected value) in a seeded random order.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _STREAM_POPULATION])))
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
    phase_u = rng.random(users)
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
        lo, hi = arch.active_from
        active_from = math.ceil((lo + (hi - lo) * phase_u[i]) * days) if hi > 0 else 0
        lo, hi = arch.active_until
        active_until = max(1, math.floor((lo + (hi - lo) * phase_u[i]) * days)) if lo < 1 else days
        active_from = min(active_from, days - 1)
        web_device = _WEB_DEVICES[bisect.bisect_right(np.cumsum(arch.devices).tolist(), device_u[i, 0] * sum(arch.devices))]
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
            index=i, user_id=f"u-{i:0{width}d}", archetype=name, activity=float(activity[i]),
            active_from_day=active_from, active_until_day=active_until,
            category_cdf=np.cumsum(prefs).tolist(), channel_cdf=np.cumsum(mix / mix.sum()).tolist(),
            web_device=web_device, app_device=app_device, tz_offset_min=tz_i,
            local_offset_strings=bool(local_strings[i]), currency=currency, consent=consent,
            stamp_offset_ms=tz_i * 60_000 if local_strings[i] else 0,
            stamp_suffix=format_timestamp(0, tz_i, not local_strings[i])[23:],
            signed_up=name != "new_visitor",
        ))
    return population

