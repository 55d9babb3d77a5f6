"""Segment names and descriptions, from how each segment differs from the population.

A segment's **distinguishing features** are its standardised centroid differences: the
mean over its users of each clustering input in the standardised space
(`models.representation`: after shrinkage, log1p and scaling), where the population mean is
0 and one unit is one population standard deviation. They are ranked by size; each comes
with the segment's and the population's value in the feature's own units (the two centres
mapped back through the scaling and log1p; for rates, after shrinkage), so the direction
of z and of the two values always agree.

**Names.** `ARCHETYPES` are named behaviour types, each defined by the directions of a few
features; a segment qualifies when every one of them differs by at least `RULE_Z` in the
stated direction and at least one of them is among its `NAMED_FROM_TOP` most
distinguishing features (a name never rests on a side feature while the main difference
goes unnamed); its score is the sum of those differences. "High-value buyers" also
needs the segment's mean lifetime spend at least `HIGH_VALUE_SPEND_RATIO` times the
population's: a segment of small-basket buyers, or one where half the users never bought,
is never called high-value. Segments choose in order of their best score, each the best
archetype still free; one without a free archetype is named after its two most
distinguishing features ("Long visits, many categories"), one that differs from the
population by less than `RULE_Z` everywhere is "Average behaviour". Names never repeat and
never carry a counter: a clash is resolved with the segment's next distinguishing feature,
and, failing all, with its top feature's value.

The description is one line: the archetype's phrase and the three most distinguishing
features with their values against the population's, plus a note when the segment's
median history is under half the population's (its rates are mostly the shrinkage's
prior: such a segment gathers users who have not shown yet what kind they are).
"""

from __future__ import annotations

import itertools
from typing import Mapping, NamedTuple, Sequence

RULE_Z = 0.5  # standard deviations: the least difference a name may rest on
NAMED_FROM_TOP = 3  # an archetype must name one of the segment's top features
HIGH_VALUE_SPEND_RATIO = 2.0  # segment mean lifetime spend / population mean lifetime spend
DISTINGUISHING_TOP = 5
DESCRIBED_TOP = 3
LITTLE_HISTORY_SHARE = 0.5  # a segment's median lifetime events below this share of the population's
AVERAGE = "Average behaviour"
UNCLASSIFIED = "Unclassified"
UNCLASSIFIED_DESCRIPTION = ("Users in no dense group of similar users (the density clustering's noise): "
                            "not assigned to a behaviour type.")

# feature -> (what a high value means, what a low value means), as words of a name.
PHRASES: dict[str, tuple[str, str]] = {
    "lifetime_page_views_per_session": ("many pages per visit", "few pages per visit"),
    "lifetime_product_views_per_session": ("many product views", "few product views"),
    "lifetime_searches_per_session": ("frequent searches", "rare searches"),
    "lifetime_cart_adds_per_session": ("many cart adds", "few cart adds"),
    "lifetime_avg_session_duration_s": ("long visits", "short visits"),
    "lifetime_bounce_rate": ("many bounces", "few bounces"),
    "lifetime_purchase_session_share": ("buy on many visits", "rarely buy"),
    "lifetime_cart_abandonment_rate": ("abandon carts", "complete carts"),
    "lifetime_social_share": ("social traffic", "little social traffic"),
    "lifetime_app_share": ("app users", "rarely on the app"),
    "lifetime_email_channel_share": ("e-mail driven", "little e-mail traffic"),
    "lifetime_mobile_share": ("mobile", "rarely mobile"),
    "lifetime_desktop_share": ("desktop", "rarely desktop"),
    "lifetime_category_entropy": ("many categories", "few categories"),
    "lifetime_email_ctr": ("click e-mails", "rarely click e-mails"),
    "lifetime_email_opens_per_session": ("read e-mails", "rarely open e-mails"),
    "avg_order_value": ("large baskets", "small or no orders"),  # 0 for a user who never bought
    "orders": ("frequent buyers", "one or few orders"),
    "recency_days": ("long since last purchase", "bought recently"),
    "spend_total": ("high spend", "low spend"),
    "active_days_7d": ("active this week", "not active this week"),
    "active_days_30d": ("active this month", "not active this month"),
    "active_days_90d": ("active this quarter", "not active this quarter"),
    "sessions_30d": ("many recent visits", "few recent visits"),
    "days_since_last_event": ("long silent", "recently seen"),
    "tenure_days": ("long-standing", "new"),
}


class Archetype(NamedTuple):
    name: str
    phrase: str  # starts the description
    directions: tuple[tuple[str, int], ...]  # (feature, +1 high | -1 low)
    high_value: bool = False  # needs the spend ratio too


ARCHETYPES: tuple[Archetype, ...] = (
    Archetype("High-value buyers", "buy on many visits, large baskets, high lifetime spend",
              (("lifetime_purchase_session_share", 1), ("avg_order_value", 1)), high_value=True),
    Archetype("Bargain hunters", "search a lot and buy small baskets",
              (("lifetime_searches_per_session", 1), ("avg_order_value", -1))),
    Archetype("Deal searchers", "search and compare many products per visit",
              (("lifetime_searches_per_session", 1), ("lifetime_product_views_per_session", 1))),
    Archetype("Cart abandoners", "fill carts and leave without buying",
              (("lifetime_cart_adds_per_session", 1), ("lifetime_cart_abandonment_rate", 1))),
    Archetype("Window shoppers", "browse many pages and rarely fill a cart",
              (("lifetime_page_views_per_session", 1), ("lifetime_cart_adds_per_session", -1))),
    Archetype("E-mail engaged", "come through e-mails: open and click them",
              (("lifetime_email_opens_per_session", 1), ("lifetime_email_ctr", 1))),
    Archetype("Targeted desktop shoppers", "search on desktop and go straight to what they want",
              (("lifetime_desktop_share", 1), ("lifetime_searches_per_session", 1))),
    Archetype("Casual visitors", "short visits that often bounce",
              (("lifetime_bounce_rate", 1), ("lifetime_avg_session_duration_s", -1))),
    Archetype("Social browsers", "arrive from social media",
              (("lifetime_social_share", 1),)),
    Archetype("App loyalists", "use the app",
              (("lifetime_app_share", 1),)),
    Archetype("Frequent buyers", "buy on many of their visits",
              (("lifetime_purchase_session_share", 1),)),
)


class Profile(NamedTuple):
    """How one segment differs from the population (inputs of `name_segments`)."""

    z: Mapping[str, float]  # standardised centroid difference per feature
    value: Mapping[str, float]  # the segment's centre, original units
    population: Mapping[str, float]  # the population's centre, original units
    spend_ratio: float  # segment mean lifetime spend / population mean lifetime spend
    history: tuple[float, float] | None = None  # median lifetime events: (segment, population)


def label(feature: str) -> str:
    """A feature name as words: 'lifetime_cart_adds_per_session' -> 'cart adds per session',
    'lifetime_avg_session_duration_s' -> 'avg session duration (s)'."""
    name = feature.removeprefix("lifetime_")
    unit = " (s)" if name.endswith("_s") else ""
    return name.removesuffix("_s" if unit else "").replace("_", " ") + unit


def distinguishing(profile: Profile, top: int = DISTINGUISHING_TOP) -> list[dict]:
    """The `top` features with the largest |z|, largest first (ties by name), for the card."""
    ranked = sorted(profile.z, key=lambda f: (-abs(profile.z[f]), f))[:top]
    return [{"feature": f, "z": float(profile.z[f]), "value": float(profile.value[f]),
             "population_value": float(profile.population[f])} for f in ranked]


def archetype_score(archetype: Archetype, profile: Profile) -> float | None:
    """Sum of the signed differences when every one reaches `RULE_Z`, one of them is among the
    segment's `NAMED_FROM_TOP` most distinguishing features (and, for high value, the spend
    ratio reaches `HIGH_VALUE_SPEND_RATIO`); None when the segment does not qualify."""
    if archetype.high_value and not profile.spend_ratio >= HIGH_VALUE_SPEND_RATIO:
        return None
    top = {d["feature"] for d in distinguishing(profile, NAMED_FROM_TOP)}
    if not top & {feature for feature, _ in archetype.directions}:
        return None
    signed = [sign * float(profile.z.get(feature, 0.0)) for feature, sign in archetype.directions]
    return sum(signed) if min(signed) >= RULE_Z else None


def _phrase(profile: Profile, feature: str) -> str:
    high, low = PHRASES.get(feature, (f"high {label(feature)}", f"low {label(feature)}"))
    return high if profile.z[feature] > 0 else low


def _composed_names(profile: Profile):
    """Names from the segment's own distinguishing features: pairs in order of strength, then
    triples, then the top feature with its value at growing precision."""
    strong = [f for f in sorted(profile.z, key=lambda f: (-abs(profile.z[f]), f)) if abs(profile.z[f]) >= RULE_Z]
    if not strong:
        yield AVERAGE
    for size in (2, 3):
        for combo in itertools.combinations(strong, size):
            yield ", ".join(_phrase(profile, f) for f in combo).capitalize()
    if len(strong) == 1:
        yield _phrase(profile, strong[0]).capitalize()
    top = strong[0] if strong else sorted(profile.z, key=lambda f: (-abs(profile.z[f]), f))[0]
    for digits in range(2, 10):
        yield f"{_phrase(profile, top).capitalize()} ({label(top)} {profile.value[top]:.{digits}g})"


def describe(profile: Profile, phrase: str, top: int = DESCRIBED_TOP) -> str:
    """One line: the phrase, then the top features' values against the population's, and a
    note when the segment's users have little history (their rates lean on the population's)."""
    parts = [f"{label(d['feature'])} {d['value']:.3g} (population {d['population_value']:.3g})"
             for d in distinguishing(profile, top)]
    line = f"{phrase[0].upper()}{phrase[1:]}: {', '.join(parts)}."
    if profile.history and profile.history[0] < LITTLE_HISTORY_SHARE * profile.history[1]:
        line += (f" Little history: median {profile.history[0]:.0f} events "
                 f"(population {profile.history[1]:.0f}).")
    return line


def name_segments(profiles: Sequence[Profile], taken: Mapping[int, str] | None = None) -> list[tuple[str, str]]:
    """(name, description) of every segment, all names distinct.

    Args:
        profiles: one per segment.
        taken: segment position -> a name it keeps (inherited from a previous model); the
            others choose among the rest.
    """
    taken = dict(taken or {})
    used = set(taken.values())
    if len(used) != len(taken):
        raise ValueError(f"inherited names repeat: {sorted(taken.values())}")
    result: dict[int, tuple[str, str]] = {}
    options = {}
    for i, profile in enumerate(profiles):
        scored = [(s, a) for a in ARCHETYPES if (s := archetype_score(a, profile)) is not None]
        options[i] = sorted(scored, key=lambda sa: (-sa[0], sa[1].name))
    for i, name in taken.items():
        phrase = next((a.phrase for _, a in options[i] if a.name == name), "kept from the previous model")
        result[i] = (name, describe(profiles[i], phrase))
    # The segments that fit an archetype best choose first.
    order = sorted((i for i in range(len(profiles)) if i not in taken),
                   key=lambda i: (-(options[i][0][0] if options[i] else float("-inf")), i))
    for i in order:
        choice = next(((a.name, a.phrase) for _, a in options[i] if a.name not in used), None)
        if choice is None:
            name = next(n for n in _composed_names(profiles[i]) if n not in used)
            strong = any(abs(v) >= RULE_Z for v in profiles[i].z.values())
            choice = (name, "differs from the population by" if strong else
                      "close to the population on every behaviour feature; nearest")
        used.add(choice[0])
        result[i] = (choice[0], describe(profiles[i], choice[1]))
    return [result[i] for i in range(len(profiles))]
