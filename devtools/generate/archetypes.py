"""The seven latent archetypes, and the catalogue, clock and region constants they use.

An archetype is a behaviour type. Users of one archetype share:

* how they browse (`Archetype`: visit rate, funnel depth, basket, categories,
  channels, devices, local time of day, weekend pattern, e-mail response), and
* how they buy and leave (`PurchaseProcess`: the BG/NBD parameters of their
  repeat purchases, the rate of their first purchase, and the dropout hazard of
  those who have not bought yet).

Purchase processes (rates per day; mean lambda = r / alpha, mean p = a / (a + b)):

==================  ======  =====  =====  ====  =====  ===========  =============  ===========
archetype           weight  r      alpha  a     b      first buy    non-buyer      browse
                                                       (1/day)      hazard (1/day) sessions/day
==================  ======  =====  =====  ====  =====  ===========  =============  ===========
loyal_high_value    0.10    3.0    60     1.0   12     1/20         1/300          0.10
bargain_hunter      0.17    1.5    50     1.5   7      1/45         1/200          0.12
window_shopper      0.20    1.0    120    2.0   6      1/200        1/150          0.15
cart_abandoner      0.15    1.2    80     1.5   5      1/90         1/180          0.10
email_engaged       0.13    2.0    60     1.2   9      1/40         1/250          0.035
occasional_buyer    0.12    2.5    250    1.0   6      1/70         1/300          0.035
casual_visitor      0.13    0.8    120    2.5   4      1/150        1/60           0.06
==================  ======  =====  =====  ====  =====  ===========  =============  ===========

(`ARCHETYPES` is the source of these numbers; `segments generate --truth` writes
them to `<truth stem>.params.json` with every run.)
"""

from __future__ import annotations

import dataclasses

import numpy as np

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

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

# Local-time hour-of-day weights of session starts: quiet nights, a lunch bump and
# an evening peak. An archetype scales office hours (9-16 h) by `daytime_boost` and
# late hours (22-01 h) by `late_boost`; every profile keeps its peak in the evening.
_HOUR_WEIGHTS = np.array([
    0.6, 0.35, 0.2, 0.15, 0.15, 0.25, 0.6, 1.2, 1.8, 2.2, 2.4, 2.6,
    3.0, 2.8, 2.5, 2.4, 2.5, 2.8, 3.4, 4.0, 4.3, 3.9, 2.8, 1.5])
_DAYTIME_HOURS = slice(9, 17)
_LATE_HOURS = (22, 23, 0, 1)
# Weekday factor, Monday first (mean 1); weekends are further scaled by the
# archetype's `weekend_boost`.
WEEKDAY_FACTOR: tuple[float, ...] = (0.92, 0.94, 0.97, 0.98, 1.04, 1.10, 1.05)

# Time zones (offset minutes, share of users) and the currency of each region.
_TZ_OFFSETS = np.array([0, 60, 120, -300, -240, 330, 540, -180, 600])
_TZ_SHARES = np.array([0.30, 0.22, 0.12, 0.12, 0.06, 0.06, 0.05, 0.04, 0.03])
_CURRENCIES = ("EUR", "USD", "GBP")
_CURRENCY_BY_TZ = {0: "GBP", 60: "EUR", 120: "EUR", -300: "USD", -240: "USD", 330: "USD", 540: "USD",
                   -180: "USD", 600: "USD"}
_WEB_DEVICES = ("desktop", "mobile", "tablet")

EPOCH_MS_SHARE = 0.10  # share of events whose timestamp is integer epoch milliseconds
LOCAL_OFFSET_USER_SHARE = 0.75  # share of users whose RFC 3339 strings carry their local offset (else "Z")
CONSENT_MODES: tuple[tuple[str, float], ...] = (("granted", 0.93), ("no_personalization", 0.03), ("absent", 0.04))
CAMPAIGN_DAY_SHARE = 0.30
CLICK_SESSION_SHARE = 0.6  # share of campaign clicks that lead into a (browsing) web session
# Users arrive over the first ACQUISITION_SHARE of the calibration period (`population`).
ACQUISITION_SHARE = 0.8
_ACTIVITY_PARETO_ALPHA = 1.5
_ACTIVITY_CAP = 20.0
_MEAN_GAP_MS = 40_000  # mean time between events of a session
_MAX_RUN = 30  # cap of any geometric count (page views, product views)
_MAX_ORDER_LINES = 6

# Channels of a session (store orders are drawn separately, `store_share`).
SESSION_CHANNELS: tuple[str, ...] = ("web", "app", "social", "other")


@dataclasses.dataclass(frozen=True)
class PurchaseProcess:
    """How an archetype's users buy and leave (BG/NBD after the first purchase).

    Each user draws a purchase rate lambda ~ Gamma(shape r, rate alpha) and a
    dropout probability p ~ Beta(a, b). The first purchase comes after an
    Exponential(`first_purchase_rate`) time from acquisition, unless the user
    leaves first (hazard `nonbuyer_dropout`). From the first purchase on,
    purchases are a Poisson(lambda) process, and after each repeat purchase the
    user leaves with probability p (Fader, Hardie & Lee 2005).

    Attributes:
      r: shape of the Gamma distribution of lambda.
      alpha: rate of the Gamma distribution of lambda, in days (lambda is per day).
      a: first shape of the Beta distribution of p.
      b: second shape of the Beta distribution of p.
      first_purchase_rate: rate of the time from acquisition to the first
        purchase, per day (mean 1 / rate days); the same for every user of the
        archetype, so that who becomes a buyer does not depend on lambda.
      nonbuyer_dropout: dropout hazard per day of a user who has not bought yet.
    """

    r: float
    alpha: float
    a: float
    b: float
    first_purchase_rate: float
    nonbuyer_dropout: float

    @property
    def mean_rate(self) -> float:
        """Mean lambda, purchases per day while alive."""
        return self.r / self.alpha

    @property
    def mean_dropout(self) -> float:
        """Mean p, dropout probability after a repeat purchase."""
        return self.a / (self.a + self.b)


@dataclasses.dataclass(frozen=True)
class Archetype:
    """Behaviour parameters of a latent user archetype.

    Attributes:
      weight: share of the population.
      purchases: how the archetype buys and leaves.
      browse_sessions_per_day: mean sessions without a purchase per day alive,
        of a user with activity 1 (activity is Pareto, mean 1, capped at 20).
      page_views: mean page views per session (geometric, >= 1).
      p_search: probability that a session has a search.
      p_product_view: probability that a browsing session reaches product pages.
      product_views: mean product views when it does (geometric, >= 1).
      p_add_to_cart: probability that a product viewed while browsing is added to the cart.
      p_remove_from_cart: probability that a session with a cart removes a line.
      p_checkout: probability that a browsing session with a cart starts checkout
        (and abandons it: browsing sessions never complete a purchase).
      order_lines: mean cart lines of an order (geometric, 1 to 6).
      store_share: share of orders placed in a store (device "pos", no browsing).
      email_order_share: share of online orders that start from a campaign e-mail
        (open, click, then the checkout session).
      p_refund: probability that an order line is refunded (1-10 days later).
      p_social_share: probability that a viewed product is shared.
      value_median: median unit price paid, in currency units (lognormal; scaled
        by the category's price level).
      value_sigma: log-scale standard deviation of the unit price.
      email_open: probability of opening a campaign e-mail.
      email_click: probability of clicking an opened campaign e-mail.
      category_alpha: Dirichlet concentration of the user's category preferences
        over `CATEGORIES` (small = a few favourite categories).
      channels: session channel mix over `SESSION_CHANNELS` (web, app, social, other).
      devices: device mix of web sessions (desktop, mobile, tablet).
      weekend_boost: extra factor on Saturday and Sunday browsing rates.
      daytime_boost: factor on the weight of local office hours (9-16 h).
      late_boost: factor on the weight of late local hours (22-01 h).
    """

    weight: float
    purchases: PurchaseProcess
    browse_sessions_per_day: float
    page_views: float
    p_search: float
    p_product_view: float
    product_views: float
    p_add_to_cart: float
    p_remove_from_cart: float
    p_checkout: float
    order_lines: float
    store_share: float
    email_order_share: float
    p_refund: float
    p_social_share: float
    value_median: float
    value_sigma: float
    email_open: float
    email_click: float
    category_alpha: float
    channels: tuple[float, float, float, float]
    devices: tuple[float, float, float]
    weekend_boost: float = 1.0
    daytime_boost: float = 1.0
    late_boost: float = 1.0

    def hour_profile(self) -> np.ndarray:
        """Probabilities of the 24 local hours for a session start (sums to 1)."""
        weights = _HOUR_WEIGHTS.copy()
        weights[_DAYTIME_HOURS] *= self.daytime_boost
        weights[list(_LATE_HOURS)] *= self.late_boost
        return weights / weights.sum()


ARCHETYPES: dict[str, Archetype] = {
    # Frequent, decisive, high-value buyers who rarely leave; app users; some store orders.
    "loyal_high_value": Archetype(
        weight=0.10, purchases=PurchaseProcess(r=3.0, alpha=60.0, a=1.0, b=12.0, first_purchase_rate=1 / 20,
                                               nonbuyer_dropout=1 / 300),
        browse_sessions_per_day=0.10, page_views=1.8, p_search=0.3, p_product_view=0.85, product_views=2.5,
        p_add_to_cart=0.25, p_remove_from_cart=0.05, p_checkout=0.15, order_lines=1.8, store_share=0.12,
        email_order_share=0.08, p_refund=0.02, p_social_share=0.04, value_median=110.0, value_sigma=0.55,
        email_open=0.35, email_click=0.35, category_alpha=0.5, channels=(0.55, 0.40, 0.03, 0.02),
        devices=(0.55, 0.35, 0.10)),
    # Many searches and product views, cheap baskets, weekend deals, more refunds.
    "bargain_hunter": Archetype(
        weight=0.17, purchases=PurchaseProcess(r=1.5, alpha=50.0, a=1.5, b=7.0, first_purchase_rate=1 / 45,
                                               nonbuyer_dropout=1 / 200),
        browse_sessions_per_day=0.12, page_views=2.5, p_search=0.65, p_product_view=0.85, product_views=4.0,
        p_add_to_cart=0.12, p_remove_from_cart=0.25, p_checkout=0.15, order_lines=1.6, store_share=0.02,
        email_order_share=0.10, p_refund=0.06, p_social_share=0.04, value_median=18.0, value_sigma=0.45,
        email_open=0.25, email_click=0.3, category_alpha=1.5, channels=(0.62, 0.25, 0.10, 0.03),
        devices=(0.35, 0.58, 0.07), weekend_boost=1.35),
    # Browse a lot and late, rarely buy; social traffic and shares.
    "window_shopper": Archetype(
        weight=0.20, purchases=PurchaseProcess(r=1.0, alpha=120.0, a=2.0, b=6.0, first_purchase_rate=1 / 200,
                                               nonbuyer_dropout=1 / 150),
        browse_sessions_per_day=0.15, page_views=3.0, p_search=0.3, p_product_view=0.75, product_views=3.5,
        p_add_to_cart=0.03, p_remove_from_cart=0.15, p_checkout=0.1, order_lines=1.1, store_share=0.02,
        email_order_share=0.03, p_refund=0.01, p_social_share=0.10, value_median=45.0, value_sigma=0.6,
        email_open=0.08, email_click=0.1, category_alpha=2.0, channels=(0.57, 0.15, 0.25, 0.03),
        devices=(0.30, 0.62, 0.08), weekend_boost=1.2, late_boost=1.8),
    # Fill carts, often remove lines, start checkout and abandon it; buy now and then.
    "cart_abandoner": Archetype(
        weight=0.15, purchases=PurchaseProcess(r=1.2, alpha=80.0, a=1.5, b=5.0, first_purchase_rate=1 / 90,
                                               nonbuyer_dropout=1 / 180),
        browse_sessions_per_day=0.10, page_views=1.8, p_search=0.3, p_product_view=0.85, product_views=2.5,
        p_add_to_cart=0.5, p_remove_from_cart=0.35, p_checkout=0.45, order_lines=2.2, store_share=0.01,
        email_order_share=0.08, p_refund=0.02, p_social_share=0.03, value_median=60.0, value_sigma=0.6,
        email_open=0.12, email_click=0.2, category_alpha=1.0, channels=(0.66, 0.25, 0.05, 0.04),
        devices=(0.45, 0.45, 0.10)),
    # Few own visits; open and click most campaigns, and most of their orders start from one.
    "email_engaged": Archetype(
        weight=0.13, purchases=PurchaseProcess(r=2.0, alpha=60.0, a=1.2, b=9.0, first_purchase_rate=1 / 40,
                                               nonbuyer_dropout=1 / 250),
        browse_sessions_per_day=0.035, page_views=1.6, p_search=0.15, p_product_view=0.8, product_views=2.0,
        p_add_to_cart=0.2, p_remove_from_cart=0.08, p_checkout=0.1, order_lines=1.4, store_share=0.03,
        email_order_share=0.6, p_refund=0.03, p_social_share=0.03, value_median=55.0, value_sigma=0.5,
        email_open=0.7, email_click=0.5, category_alpha=0.8, channels=(0.83, 0.10, 0.04, 0.03),
        devices=(0.55, 0.38, 0.07), weekend_boost=0.9, daytime_boost=1.2),
    # Rare, short, targeted visits on weekdays at office hours: search, look, buy a few
    # high-value items in one or two categories (gifts, equipment); desktop; some in store.
    "occasional_buyer": Archetype(
        weight=0.12, purchases=PurchaseProcess(r=2.5, alpha=250.0, a=1.0, b=6.0, first_purchase_rate=1 / 70,
                                               nonbuyer_dropout=1 / 300),
        browse_sessions_per_day=0.035, page_views=1.4, p_search=0.55, p_product_view=0.9, product_views=1.6,
        p_add_to_cart=0.25, p_remove_from_cart=0.05, p_checkout=0.1, order_lines=1.2, store_share=0.15,
        email_order_share=0.05, p_refund=0.04, p_social_share=0.02, value_median=90.0, value_sigma=0.7,
        email_open=0.15, email_click=0.2, category_alpha=0.4, channels=(0.82, 0.08, 0.05, 0.05),
        devices=(0.75, 0.15, 0.10), weekend_boost=0.75, daytime_boost=1.4),
    # Short, shallow mobile visits, often from social media and late in the evening; rarely
    # reach a product page; leave soon unless they buy.
    "casual_visitor": Archetype(
        weight=0.13, purchases=PurchaseProcess(r=0.8, alpha=120.0, a=2.5, b=4.0, first_purchase_rate=1 / 150,
                                               nonbuyer_dropout=1 / 60),
        browse_sessions_per_day=0.06, page_views=1.3, p_search=0.1, p_product_view=0.4, product_views=1.5,
        p_add_to_cart=0.05, p_remove_from_cart=0.1, p_checkout=0.2, order_lines=1.1, store_share=0.0,
        email_order_share=0.02, p_refund=0.02, p_social_share=0.06, value_median=35.0, value_sigma=0.6,
        email_open=0.05, email_click=0.1, category_alpha=3.0, channels=(0.55, 0.10, 0.30, 0.05),
        devices=(0.20, 0.75, 0.05), weekend_boost=1.1, late_boost=1.8),
}
ARCHETYPE_NAMES: tuple[str, ...] = tuple(ARCHETYPES)
# Cumulative local-hour profiles, one row per archetype in `ARCHETYPE_NAMES` order.
HOUR_CDF: np.ndarray = np.array([np.cumsum(ARCHETYPES[name].hour_profile()) for name in ARCHETYPE_NAMES])
HOUR_CDF[:, -1] = 1.0
