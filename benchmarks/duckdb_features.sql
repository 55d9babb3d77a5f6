-- Reference implementation of the per-user window features (transforms/features/FEATURES.md) in
-- plain DuckDB SQL, for the throughput benchmark (variant c) and the equality test
-- (tests/benchmarks/test_duckdb_reference.py). Run through `benchmarks.duckdb_features.compute`.
--
-- Parameters (DuckDB prepared-statement names):
--   $path        JSON-lines event file(s) (a path or a glob)
--   $gap_us      session gap, microseconds (default 30 min)
--   $size_days   window size in days (default 30); the period is one day
--   $as_of_us    keep windows ending at or before this; NULL = the midnight (UTC) after
--                the latest valid, consented, unique event (what `segments run` does)
--
-- Scope: valid events as the generator writes them (known event type, parseable
-- timestamp), consent.personalization = true (a missing consent object denies),
-- deduplicated on (user_id, event_id) keeping the earliest (timestamp, position). Users stay raw
-- ids here; the caller pseudonymises them (HMAC has no SQL built-in).
WITH
raw AS (
    SELECT *, row_number() OVER () AS line_no
    FROM read_json($path, format = 'newline_delimited', columns = {
        event_id: 'VARCHAR', user_id: 'VARCHAR', event_type: 'VARCHAR', "timestamp": 'JSON',
        session_id: 'VARCHAR', channel: 'VARCHAR', device: 'VARCHAR',
        properties: 'STRUCT(category VARCHAR, "value" DOUBLE)',
        consent: 'STRUCT(personalization BOOLEAN)'})
),
events AS (
    SELECT
        event_id, user_id, event_type, session_id, channel, line_no,
        properties.category AS category,
        coalesce(properties."value", 0.0) AS value,
        CASE WHEN json_type("timestamp") IN ('UBIGINT', 'BIGINT')
             THEN CAST("timestamp" AS BIGINT) * 1000
             ELSE epoch_us(CAST(json_extract_string("timestamp", '$') AS TIMESTAMPTZ)) END AS ts_us
    FROM raw
    WHERE consent.personalization
      AND event_id IS NOT NULL AND user_id IS NOT NULL
      AND event_type IN ('page_view', 'product_view', 'search', 'add_to_cart', 'remove_from_cart',
                         'checkout_start', 'purchase', 'refund', 'email_open', 'email_click',
                         'app_open', 'social_share', 'signup')
),
unique_events AS (
    SELECT *, ts_us // 86400000000 AS day
    FROM events
    QUALIFY row_number() OVER (PARTITION BY user_id, event_id ORDER BY ts_us, line_no) = 1
),
as_of AS (
    SELECT coalesce($as_of_us, (max(ts_us) // 86400000000 + 1) * 86400000000) AS as_of_us
    FROM unique_events
),
-- Sessions: per user and session_id (NULL ids form one group), a new session starts
-- when the previous event is at least the gap earlier.
session_marks AS (
    SELECT *,
        CASE WHEN ts_us - lag(ts_us) OVER w < $gap_us THEN 0 ELSE 1 END AS starts_session
    FROM unique_events
    WINDOW w AS (PARTITION BY user_id, session_id ORDER BY ts_us)
),
session_numbers AS (
    SELECT *, sum(starts_session) OVER (PARTITION BY user_id, session_id ORDER BY ts_us
                                        ROWS UNBOUNDED PRECEDING) AS session_no
    FROM session_marks
),
sessions AS (
    SELECT
        user_id,
        min(ts_us) // 86400000000 AS day,  -- a session counts on the day it started
        max(ts_us) - min(ts_us) AS duration_us,
        count(*) AS n_events,
        count_if(event_type = 'page_view') AS page_views,
        bool_or(event_type = 'add_to_cart') AS reached_cart,
        bool_or(event_type = 'purchase') AS reached_purchase
    FROM session_numbers
    GROUP BY user_id, session_id, session_no
),
-- Daily partials per user.
daily_events AS (
    SELECT
        user_id, day,
        count(*) AS events,
        min(ts_us) AS first_seen_us,
        count_if(event_type = 'purchase') AS purchases,
        sum(value) FILTER (WHERE event_type = 'purchase') AS purchase_value,
        sum(value) FILTER (WHERE event_type = 'refund') AS refund_value,
        min(ts_us) FILTER (WHERE event_type = 'purchase') AS first_purchase_us,
        max(ts_us) FILTER (WHERE event_type = 'purchase') AS last_purchase_us,
        count_if(event_type = 'email_open') AS email_opens,
        count_if(event_type = 'email_click') AS email_clicks,
        count_if(event_type = 'social_share' OR channel = 'social') AS social,
        count_if(event_type = 'product_view') AS product_views,
        count_if(event_type = 'search') AS searches,
        count_if(event_type = 'add_to_cart') AS cart_adds,
        count_if(event_type = 'checkout_start') AS checkout_starts,
        max(CASE WHEN event_type = 'purchase' THEN 3
                 WHEN event_type IN ('add_to_cart', 'checkout_start') THEN 2
                 WHEN event_type IN ('product_view', 'search') THEN 1
                 ELSE 0 END) AS funnel,
        count_if(ts_us % 86400000000 < 21600000000) AS night,
        count_if(ts_us % 86400000000 >= 21600000000 AND ts_us % 86400000000 < 43200000000) AS morning,
        count_if(ts_us % 86400000000 >= 43200000000 AND ts_us % 86400000000 < 64800000000) AS afternoon,
        count_if(ts_us % 86400000000 >= 64800000000) AS evening
    FROM unique_events
    GROUP BY user_id, day
),
daily_sessions AS (
    SELECT
        user_id, day,
        count(*) AS sessions,
        sum(duration_us) AS duration_us,
        sum(page_views) AS page_views,
        count_if(n_events = 1) AS bounces,
        count_if(reached_cart) AS cart_sessions,
        count_if(reached_cart AND NOT reached_purchase) AS abandoned
    FROM sessions
    GROUP BY user_id, day
),
daily_categories AS (
    SELECT user_id, day, category, count(*) AS n
    FROM unique_events
    WHERE category IS NOT NULL
    GROUP BY user_id, day, category
),
-- Sliding windows [end_day - size_days, end_day) in days: every window that contains a
-- day with activity and ends by the as-of time.
windows AS (
    SELECT DISTINCT d.user_id, w.end_day
    FROM daily_events d, unnest(range(d.day + 1, d.day + 1 + $size_days)) AS w(end_day)
    WHERE w.end_day * 86400000000 <= (SELECT as_of_us FROM as_of)
),
window_events AS (
    SELECT
        w.user_id, w.end_day,
        sum(d.events) AS events,
        count(*) AS active_days,
        min(d.first_seen_us) AS first_seen_us,
        sum(d.purchases) AS purchases,
        count_if(d.purchases > 0) AS purchase_days,
        coalesce(sum(d.purchase_value), 0.0) AS purchase_value,
        coalesce(sum(d.refund_value), 0.0) AS refund_value,
        min(d.first_purchase_us) AS first_purchase_us,
        max(d.last_purchase_us) AS last_purchase_us,
        sum(d.email_opens) AS email_opens,
        sum(d.email_clicks) AS email_clicks,
        sum(d.social) AS social,
        sum(d.product_views) AS product_views,
        sum(d.searches) AS searches,
        sum(d.cart_adds) AS cart_adds,
        sum(d.checkout_starts) AS checkout_starts,
        max(d.funnel) AS funnel,
        sum(d.night) AS night, sum(d.morning) AS morning,
        sum(d.afternoon) AS afternoon, sum(d.evening) AS evening
    FROM windows w
    JOIN daily_events d
      ON d.user_id = w.user_id AND d.day >= w.end_day - $size_days AND d.day < w.end_day
    GROUP BY w.user_id, w.end_day
),
window_sessions AS (
    SELECT
        w.user_id, w.end_day,
        sum(s.sessions) AS sessions,
        sum(s.duration_us) AS duration_us,
        sum(s.page_views) AS page_views,
        sum(s.bounces) AS bounces,
        sum(s.cart_sessions) AS cart_sessions,
        sum(s.abandoned) AS abandoned
    FROM windows w
    JOIN daily_sessions s
      ON s.user_id = w.user_id AND s.day >= w.end_day - $size_days AND s.day < w.end_day
    GROUP BY w.user_id, w.end_day
),
window_category_counts AS (
    SELECT w.user_id, w.end_day, c.category, sum(c.n) AS n
    FROM windows w
    JOIN daily_categories c
      ON c.user_id = w.user_id AND c.day >= w.end_day - $size_days AND c.day < w.end_day
    GROUP BY w.user_id, w.end_day, c.category
),
window_categories AS (
    SELECT
        user_id, end_day,
        arg_min(category, (-n, category)) AS top_category,
        max(n) / sum(n) AS top_category_share,
        -sum((n / t) * ln(n / t)) AS category_entropy
    FROM (SELECT *, sum(n) OVER (PARTITION BY user_id, end_day) AS t FROM window_category_counts)
    GROUP BY user_id, end_day
)
SELECT
    e.user_id,
    (e.end_day - $size_days) * 86400000000 AS window_start_us,
    e.end_day * 86400000000 AS window_end_us,
    e.events AS event_count,
    CASE WHEN e.last_purchase_us IS NULL THEN CAST($size_days AS DOUBLE)
         ELSE (e.end_day * 86400000000 - e.last_purchase_us) / 86400e6 END AS recency_days,
    CAST(e.purchases AS DOUBLE) AS frequency,
    CAST(e.purchase_days AS DOUBLE) AS purchase_days,
    greatest(0.0, e.purchase_value - e.refund_value) AS monetary_total,
    CASE WHEN e.purchases > 0 THEN greatest(0.0, e.purchase_value - e.refund_value) / e.purchases
         ELSE 0.0 END AS monetary_avg,
    CAST(e.email_opens AS DOUBLE) AS email_opens,
    CAST(e.email_clicks AS DOUBLE) AS email_clicks,
    (e.email_clicks + 1.0) / (e.email_opens + 2.0) AS email_ctr,
    CAST(e.social AS DOUBLE) AS social_interactions,
    CAST(coalesce(s.sessions, 0) AS DOUBLE) AS sessions,
    CASE WHEN s.sessions > 0 THEN s.duration_us / 1e6 / s.sessions ELSE 0.0 END AS avg_session_duration_s,
    CASE WHEN s.sessions > 0 THEN s.page_views / s.sessions ELSE 0.0 END AS pages_per_session,
    CASE WHEN s.sessions > 0 THEN s.bounces / s.sessions ELSE 0.0 END AS bounce_rate,
    CAST(e.active_days AS DOUBLE) AS active_days,
    CAST(e.product_views AS DOUBLE) AS product_views,
    CAST(e.searches AS DOUBLE) AS searches,
    e.events / e.active_days AS intensity,
    CAST(e.funnel AS DOUBLE) AS funnel_stage,
    CAST(e.cart_adds AS DOUBLE) AS cart_adds,
    CASE WHEN s.cart_sessions > 0 THEN s.abandoned / s.cart_sessions ELSE 0.0 END AS cart_abandonment_rate,
    CAST(e.checkout_starts AS DOUBLE) AS checkout_starts,
    coalesce(c.top_category_share, 0.0) AS top_category_share,
    coalesce(c.category_entropy, 0.0) AS category_entropy,
    (e.end_day * 86400000000 - e.first_seen_us) / 86400e6 AS tenure_days,
    e.night / e.events AS share_night,
    e.morning / e.events AS share_morning,
    e.afternoon / e.events AS share_afternoon,
    e.evening / e.events AS share_evening,
    c.top_category,
    e.first_seen_us,
    e.first_purchase_us,
    e.last_purchase_us
FROM window_events e
LEFT JOIN window_sessions s USING (user_id, end_day)
LEFT JOIN window_categories c USING (user_id, end_day)
ORDER BY e.user_id, e.end_day
