"""Segment names against constructed centroids: the rule, uniqueness, honesty of "high-value"."""

from __future__ import annotations

import re

import numpy as np
import pytest

from models import naming
from models.naming import ARCHETYPES, AVERAGE, RULE_Z, Profile, name_segments
from models.representation import CLUSTERING_FEATURES


def profile(spend_ratio: float = 1.0, **z: float) -> Profile:
    """A segment differing from the population by `z` (0 elsewhere); values 1 + z, population 1."""
    unknown = set(z) - set(CLUSTERING_FEATURES)
    assert not unknown, unknown
    full = {name: float(z.get(name, 0.0)) for name in CLUSTERING_FEATURES}
    return Profile(full, {n: 1.0 + v for n, v in full.items()}, {n: 1.0 for n in full}, spend_ratio)


def only(p: Profile) -> str:
    return name_segments([p])[0][0]


@pytest.mark.parametrize("z, expected", [
    (dict(lifetime_cart_adds_per_session=1.5, lifetime_cart_abandonment_rate=1.0), "Cart abandoners"),
    (dict(lifetime_searches_per_session=1.2, avg_order_value=-0.9), "Bargain hunters"),
    (dict(lifetime_page_views_per_session=1.3, lifetime_cart_adds_per_session=-1.1,
          lifetime_social_share=1.2), "Window shoppers"),
    (dict(lifetime_email_opens_per_session=1.8, lifetime_email_ctr=1.3), "E-mail engaged"),
    (dict(lifetime_bounce_rate=2.7, lifetime_avg_session_duration_s=-1.9), "Casual visitors"),
    (dict(lifetime_desktop_share=0.8, lifetime_searches_per_session=0.9), "Targeted desktop shoppers"),
    (dict(lifetime_social_share=0.9), "Social browsers"),
    (dict(lifetime_app_share=1.1), "App loyalists"),
])
def test_archetype_when_every_direction_holds(z, expected):
    assert only(profile(**z)) == expected


def test_high_value_needs_really_high_spend():
    z = dict(lifetime_purchase_session_share=1.2, avg_order_value=1.0)
    assert only(profile(spend_ratio=2.5, **z)) == "High-value buyers"
    # The same behaviour with spend only 1.5 times the population's is not "high-value".
    name = only(profile(spend_ratio=1.5, **z))
    assert name == "Frequent buyers" and "value" not in name.lower()


def test_a_direction_below_the_threshold_or_wrong_does_not_qualify():
    assert only(profile(lifetime_cart_adds_per_session=1.5, lifetime_cart_abandonment_rate=RULE_Z - 0.01)) != \
        "Cart abandoners"
    assert only(profile(lifetime_searches_per_session=1.2, avg_order_value=0.9)) != "Bargain hunters"


def test_the_name_rests_on_a_top_feature_not_a_side_one():
    # Social share qualifies (0.6 >= RULE_Z) but is only the 4th difference: not the name.
    p = profile(lifetime_bounce_rate=2.0, lifetime_product_views_per_session=-1.6, lifetime_page_views_per_session=-1.5,
                lifetime_social_share=0.6)
    name = only(p)
    assert name != "Social browsers"
    assert name == "Many bounces, few product views"


def test_nothing_distinctive_is_average():
    assert only(profile(lifetime_bounce_rate=0.3, avg_order_value=-0.2)) == AVERAGE


def test_two_segments_of_one_archetype_get_different_honest_names():
    strong = profile(lifetime_cart_adds_per_session=2.0, lifetime_cart_abandonment_rate=1.5)
    weaker = profile(lifetime_cart_adds_per_session=1.0, lifetime_cart_abandonment_rate=0.8,
                     lifetime_mobile_share=0.7)
    names = [n for n, _ in name_segments([weaker, strong])]
    assert names[1] == "Cart abandoners"  # the stronger fit keeps the archetype
    assert names[0] != names[1] and not re.search(r"\(\d+\)", names[0])
    # The other is named after its own top differences.
    assert names[0] == "Many cart adds, abandon carts"


def test_identical_profiles_still_get_distinct_names_without_counters():
    p = profile(lifetime_social_share=1.0)
    names = [n for n, _ in name_segments([p, p, p])]
    assert len(set(names)) == 3
    assert not any(re.search(r"\(\d+\)", n) for n in names)


def test_inherited_names_are_kept_and_not_reused():
    a = profile(lifetime_cart_adds_per_session=1.5, lifetime_cart_abandonment_rate=1.0)
    b = profile(lifetime_cart_adds_per_session=1.6, lifetime_cart_abandonment_rate=1.2)
    named = name_segments([a, b], taken={0: "Cart abandoners"})
    assert named[0][0] == "Cart abandoners" and named[1][0] != "Cart abandoners"


def test_description_is_one_line_with_values_against_the_population():
    _, description = name_segments([profile(lifetime_cart_adds_per_session=1.5,
                                            lifetime_cart_abandonment_rate=1.0)])[0]
    assert "\n" not in description
    assert description.startswith("Fill carts and leave without buying: cart adds per session 2.5 (population 1)")


def test_little_history_is_said_in_the_description():
    p = profile(lifetime_category_entropy=-1.7)
    assert "Little history: median 6 events (population 47)." in describe_with_history(p, (6.0, 47.0))
    assert "history" not in describe_with_history(p, (30.0, 47.0))


def describe_with_history(p: Profile, history) -> str:
    return name_segments([p._replace(history=history)])[0][1]


def test_distinguishing_features_are_ranked_by_size():
    top = naming.distinguishing(profile(lifetime_app_share=-0.7, lifetime_bounce_rate=1.2, avg_order_value=0.9), 3)
    assert [(d["feature"], d["z"]) for d in top] == [
        ("lifetime_bounce_rate", 1.2), ("avg_order_value", 0.9), ("lifetime_app_share", -0.7)]
    assert top[0]["value"] == pytest.approx(2.2) and top[0]["population_value"] == 1.0


def test_random_centroids_names_are_unique_and_agree_with_their_features():
    rng = np.random.default_rng(0)
    rules = {a.name: a for a in ARCHETYPES}
    for _ in range(200):
        profiles = [profile(spend_ratio=float(rng.uniform(0.5, 3.0)),
                            **{f: float(v) for f, v in zip(CLUSTERING_FEATURES, rng.normal(0.0, 1.0,
                                                                                          len(CLUSTERING_FEATURES)))})
                    for _ in range(int(rng.integers(2, 12)))]
        names = [n for n, _ in name_segments(profiles)]
        assert len(set(names)) == len(names)
        assert not any(re.search(r"\(\d+\)", n) for n in names)
        for p, n in zip(profiles, names):
            if n in rules:  # an archetype: every direction holds, one is a top-3 difference
                rule = rules[n]
                assert all(sign * p.z[f] >= RULE_Z for f, sign in rule.directions)
                top3 = sorted(p.z, key=lambda f: -abs(p.z[f]))[:3]
                assert {f for f, _ in rule.directions} & set(top3)
                assert not rule.high_value or p.spend_ratio >= 2.0
