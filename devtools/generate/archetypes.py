"""The seven latent user archetypes and the catalogue, clock and region constants they use."""

from __future__ import annotations

import dataclasses

import numpy as np

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

CATEGORIES: tuple[str, ...] = (
    "shoes", "apparel", "electronics", "home", "beauty", "sports",
    "toys", "books", "grocery", "garden", "jewellery", "automotive",
)
# Price level of a category relative to an archetype's median purchase value.
_CATEGORY_PRICE: dict[str, float] = {
    "shoes": 1.0, "apparel": 0.8, "electronics": 2.5, "home": 1.3, "beauty": 0.6, "sports": 1.1,
    "toys": 0.7, "books": 0.35, "grocery": 0.3, "garden": 0.9, "jewellery": 2.0, "automotive": 1.5,
}
_SEARCH_WORDS: dict[str, tuple[str, ...]] = {
    "shoes": ("running shoes", "sneakers", "boots", "sandals"),
    "apparel": ("jacket", "t-shirt", "jeans", "summer dress"),
    "electronics": ("headphones", "usb c charger", "laptop", "smart watch"),
    "home": ("sofa cushion", "lamp", "bed linen", "kitchen knife"),
    "beauty": ("face cream", "shampoo", "perfume", "lipstick"),
    "sports": ("yoga mat", "dumbbells", "bike helmet", "tennis racket"),
    "toys": ("lego", "puzzle", "board game", "plush toy"),
    "books": ("crime novel", "cookbook", "travel guide", "kids book"),
    "grocery": ("coffee beans", "olive oil", "green tea", "chocolate"),
    "garden": ("garden hose", "plant pot", "lawn mower", "seeds"),
    "jewellery": ("silver ring", "necklace", "earrings", "watch strap"),
    "automotive": ("car wax", "wiper blades", "phone mount", "tyre pump"),
}
_PRODUCTS_PER_CATEGORY = 200

# Local-time hour-of-day profile of session starts (sums to 1): quiet nights, a
# lunch bump and an evening peak.
_HOUR_WEIGHTS = np.array([
    0.6, 0.35, 0.2, 0.15, 0.15, 0.25, 0.6, 1.2, 1.8, 2.2, 2.4, 2.6,
    3.0, 2.8, 2.5, 2.4, 2.5, 2.8, 3.4, 4.0, 4.3, 3.9, 2.8, 1.5])
HOUR_PROFILE: np.ndarray = _HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()
# Weekday factor, Monday first (mean 1); weekends are further scaled by the
# archetype's `weekend_boost`.
WEEKDAY_FACTOR: tuple[float, ...] = (0.92, 0.94, 0.97, 0.98, 1.04, 1.10, 1.05)

# Time zones (offset minutes, share of users).
_TZ_OFFSETS = np.array([0, 60, 120, -300, -240, 330, 540, -180, 600])
_TZ_SHARES = np.array([0.30, 0.22, 0.12, 0.12, 0.06, 0.06, 0.05, 0.04, 0.03])
_CURRENCIES = ("EUR", "USD", "GBP")
_CURRENCY_BY_TZ = {0: "GBP", 60: "EUR", 120: "EUR", -300: "USD", -240: "USD", 330: "USD", 540: "USD",
                   -180: "USD", 600: "USD"}
_WEB_DEVICES = ("desktop", "mobile", "tablet")

EPOCH_MS_SHARE = 0.10  # share of events whose timestamp is integer epoch milliseconds
LOCAL_OFFSET_USER_SHARE = 0.30  # share of users whose RFC 3339 strings carry their local offset
CONSENT_MODES: tuple[tuple[str, float], ...] = (("granted", 0.93), ("no_personalization", 0.03), ("absent", 0.04))
CAMPAIGN_DAY_SHARE = 0.30
CLICK_SESSION_SHARE = 0.6  # share of e-mail clicks that lead into a web session
_ACTIVITY_PARETO_ALPHA = 1.5
_ACTIVITY_CAP = 20.0
_MEAN_GAP_MS = 40_000  # mean time between events of a session
_MAX_RUN = 30  # cap of any geometric count (page views, product views)



@dataclasses.dataclass(frozen=True)
class Archetype:
    """Behaviour parameters of a latent user archetype.

    Attributes:
      weight: share of the population.
      sessions_per_day: mean sessions per active day of a user with activity 1.
      page_views: mean page views per (non-store) session (geometric, >= 1).
      p_search: probability that a session has a search.
      p_product_view: probability that a session reaches product pages.
      product_views: mean product views when it does (geometric, >= 1).
      p_add_to_cart: probability that a viewed product is added to the cart.
      p_remove_from_cart: probability that a session with a cart removes a line.
      p_checkout: probability that a session with a cart starts checkout.
      p_purchase: probability that a started checkout is completed.
      p_refund: probability that a purchase is refunded (1-10 days later).
      p_social_share: probability that a viewed product is shared.
      value_median: median unit price paid, in currency units (lognormal; scaled
        by the category's price level).
      value_sigma: log-scale standard deviation of the unit price.
      email_open: probability of opening a campaign e-mail.
      email_click: probability of clicking an opened campaign e-mail.
      category_alpha: Dirichlet concentration of the user's category preferences
        over `CATEGORIES` (small = a few favourite categories).
      channels: session channel mix (web, app, social, store, other).
      devices: device mix of web sessions (desktop, mobile, tablet).
      weekend_boost: extra factor on Saturday and Sunday session rates.
      active_from: range of the fraction of the period after which the user
        becomes active (0 = from the start).
      active_until: range of the fraction of the period after which the user
        stops (1 = until the end).
    """

    weight: float
    sessions_per_day: float
    page_views: float
    p_search: float
    p_product_view: float
    product_views: float
    p_add_to_cart: float
    p_remove_from_cart: float
    p_checkout: float
    p_purchase: float
    p_refund: float
    p_social_share: float
    value_median: float
    value_sigma: float
    email_open: float
    email_click: float
    category_alpha: float
    channels: tuple[float, float, float, float, float]
    devices: tuple[float, float, float]
    weekend_boost: float = 1.0
    active_from: tuple[float, float] = (0.0, 0.0)
    active_until: tuple[float, float] = (1.0, 1.0)


SESSION_CHANNELS: tuple[str, ...] = ("web", "app", "social", "store", "other")

ARCHETYPES: dict[str, Archetype] = {
    # Frequent, decisive, high-value buyers; app users; some in-store purchases.
    "loyal_high_value": Archetype(
        weight=0.10, sessions_per_day=0.45, page_views=1.8, p_search=0.3, p_product_view=0.85, product_views=2.5,
        p_add_to_cart=0.45, p_remove_from_cart=0.05, p_checkout=0.8, p_purchase=0.85, p_refund=0.02,
        p_social_share=0.04, value_median=110.0, value_sigma=0.55, email_open=0.35, email_click=0.35,
        category_alpha=0.5, channels=(0.48, 0.35, 0.03, 0.12, 0.02), devices=(0.55, 0.35, 0.10)),
    # Many searches and product views, cheap baskets, weekend deals, more refunds.
    "bargain_hunter": Archetype(
        weight=0.17, sessions_per_day=0.35, page_views=2.5, p_search=0.65, p_product_view=0.85, product_views=4.0,
        p_add_to_cart=0.18, p_remove_from_cart=0.25, p_checkout=0.6, p_purchase=0.7, p_refund=0.06,
        p_social_share=0.04, value_median=18.0, value_sigma=0.45, email_open=0.25, email_click=0.3,
        category_alpha=1.5, channels=(0.60, 0.25, 0.10, 0.02, 0.03), devices=(0.35, 0.58, 0.07),
        weekend_boost=1.35),
    # Browse a lot, rarely buy; social traffic and shares.
    "window_shopper": Archetype(
        weight=0.20, sessions_per_day=0.35, page_views=3.0, p_search=0.3, p_product_view=0.75, product_views=3.5,
        p_add_to_cart=0.03, p_remove_from_cart=0.15, p_checkout=0.3, p_purchase=0.4, p_refund=0.01,
        p_social_share=0.10, value_median=45.0, value_sigma=0.6, email_open=0.08, email_click=0.1,
        category_alpha=2.0, channels=(0.55, 0.15, 0.25, 0.02, 0.03), devices=(0.30, 0.62, 0.08),
        weekend_boost=1.2),
    # Fill carts, often remove lines, rarely complete checkout.
    "cart_abandoner": Archetype(
        weight=0.15, sessions_per_day=0.3, page_views=1.8, p_search=0.3, p_product_view=0.85, product_views=2.5,
        p_add_to_cart=0.55, p_remove_from_cart=0.35, p_checkout=0.45, p_purchase=0.12, p_refund=0.02,
        p_social_share=0.03, value_median=60.0, value_sigma=0.6, email_open=0.12, email_click=0.2,
        category_alpha=1.0, channels=(0.65, 0.25, 0.05, 0.01, 0.04), devices=(0.45, 0.45, 0.10)),
    # Few own visits; open and click most campaigns, which lead to purchases.
    "email_engaged": Archetype(
        weight=0.13, sessions_per_day=0.12, page_views=1.6, p_search=0.15, p_product_view=0.8, product_views=2.0,
        p_add_to_cart=0.35, p_remove_from_cart=0.08, p_checkout=0.6, p_purchase=0.7, p_refund=0.03,
        p_social_share=0.03, value_median=55.0, value_sigma=0.5, email_open=0.7, email_click=0.5,
        category_alpha=0.8, channels=(0.80, 0.10, 0.04, 0.03, 0.03), devices=(0.55, 0.38, 0.07),
        weekend_boost=0.9),
    # Appear late in the period, sign up, explore (search heavy).
    "new_visitor": Archetype(
        weight=0.12, sessions_per_day=0.5, page_views=2.5, p_search=0.45, p_product_view=0.7, product_views=2.5,
        p_add_to_cart=0.15, p_remove_from_cart=0.1, p_checkout=0.5, p_purchase=0.45, p_refund=0.02,
        p_social_share=0.06, value_median=40.0, value_sigma=0.6, email_open=0.3, email_click=0.25,
        category_alpha=1.5, channels=(0.55, 0.20, 0.20, 0.00, 0.05), devices=(0.40, 0.52, 0.08),
        active_from=(0.55, 0.9)),
    # Ordinary customers early in the period who then stop coming.
    "dormant": Archetype(
        weight=0.13, sessions_per_day=0.3, page_views=2.0, p_search=0.3, p_product_view=0.75, product_views=2.5,
        p_add_to_cart=0.2, p_remove_from_cart=0.1, p_checkout=0.5, p_purchase=0.5, p_refund=0.03,
        p_social_share=0.04, value_median=50.0, value_sigma=0.6, email_open=0.1, email_click=0.15,
        category_alpha=1.0, channels=(0.60, 0.30, 0.05, 0.03, 0.02), devices=(0.45, 0.45, 0.10),
        active_until=(0.25, 0.6)),
}
ARCHETYPE_NAMES: tuple[str, ...] = tuple(ARCHETYPES)
