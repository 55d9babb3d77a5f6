-- Reference implementation of the v3 user profile (transforms/features/FEATURES.md) in plain
-- DuckDB SQL, for the throughput benchmark (variant c) and the equality test
-- (tests/benchmarks/test_duckdb_reference.py). Run through `benchmarks.duckdb_features.compute`,
-- which executes the macros first and the final query with these parameters:
--
--   $path               JSON-lines event file(s) (a path or a glob)
--   $fx_path            exchange-rate table, CSV date,currency,units_per_eur ('#' lines are comments)
--   $reporting_currency currency of the money features (EUR)
--   $gap_us             session gap, microseconds (30 min)
--   $as_of_us           the scoring time; NULL = the midnight (UTC) after the latest valid,
--                       consented event, duplicates included (what `segments run` does)
--   $earliest_us, $latest_us, $max_event_bytes   the validator's limits (ValidationConfig)
--
-- Output: one row per user with an event before the as-of time: the feature record of
-- `segments run --history_days 0` (identity, event_count, MODEL_FEATURES, PROFILE_FACTS), with
-- the raw `user_id` (the caller pseudonymises it: HMAC has no SQL built-in).
--
-- Input handling, as the pipeline's reader and validator (transforms/ingest/): one record per
-- non-blank line; a record is read only if it is at most $max_event_bytes, a JSON object, and
-- every field the contract knows has its type, length and range. Then consent.personalization
-- must be true (no consent object denies) and each (user_id, event_id) keeps its copy with the
-- smallest (timestamp, source), source being 'file:line'. Known gaps (see README): timestamps
-- are read in the RFC 3339 forms (Python's fromisoformat accepts more ISO 8601 spellings),
-- DuckDB's JSON parser accepts NaN, Infinity and trailing commas outside the contract's fields
-- and keeps the first of duplicate keys, and the 32-category cap is not applied.

-- The contract's fields, in the order of the `ty`/`tx` lists below.
CREATE OR REPLACE TEMP MACRO bench_paths() AS [
    '$.event_id', '$.user_id', '$.event_type', '$.timestamp', '$.session_id', '$.channel', '$.device',
    '$.properties', '$.consent', '$.properties.value', '$.properties.currency', '$.properties.quantity',
    '$.properties.product_id', '$.properties.category', '$.properties.page', '$.properties.search_query',
    '$.properties.campaign', '$.properties.order_id', '$.properties.duration_s', '$.properties.duration_ms',
    '$.properties.duration_min', '$.consent.analytics', '$.consent.personalization'];
-- Checks of one field from its JSON type t (NULL: absent; 'NULL': null) and its text s (a
-- string unquoted, a number as written; NULL for null).
CREATE OR REPLACE TEMP MACRO bench_given(t) AS coalesce(t <> 'NULL', false);
CREATE OR REPLACE TEMP MACRO bench_required_text_ok(t, s, max_chars) AS
    coalesce(t = 'VARCHAR' AND length(s) BETWEEN 1 AND max_chars, false);
-- Absent or null, or a string of 1..max_chars characters.
CREATE OR REPLACE TEMP MACRO bench_text_ok(t, s, max_chars) AS
    NOT bench_given(t) OR bench_required_text_ok(t, s, max_chars);
CREATE OR REPLACE TEMP MACRO bench_number(t, s) AS
    CASE WHEN t IN ('UBIGINT', 'BIGINT', 'DOUBLE') THEN TRY_CAST(s AS DOUBLE) END;
-- Absent or null, or a finite number (a JSON boolean is not one).
CREATE OR REPLACE TEMP MACRO bench_number_ok(t, s) AS
    NOT bench_given(t) OR coalesce(isfinite(bench_number(t, s)), false);
CREATE OR REPLACE TEMP MACRO bench_type_ok(t, json_type) AS
    NOT bench_given(t) OR t = json_type;
-- A ratio; 0 with a zero (or no) denominator.
CREATE OR REPLACE TEMP MACRO bench_ratio(a, b) AS
    CASE WHEN b > 0 THEN CAST(a AS DOUBLE) / b ELSE 0.0 END;

WITH
lines AS (
    -- One row per line (a blank line is a NULL row, so positions are line numbers; a line the
    -- CSV reader refuses, such as invalid UTF-8, is skipped: it could not be an event anyway).
    SELECT filename, row_number() OVER () AS pos, line
    FROM read_csv($path, columns = {'line': 'VARCHAR'}, header = false, auto_detect = false,
                  delim = E'\x01', quote = '', escape = '', new_line = '\r\n', filename = true,
                  ignore_errors = true, strict_mode = false)
),
numbered AS (
    SELECT filename || ':' || (pos - min(pos) OVER (PARTITION BY filename) + 1) AS source, line
    FROM lines
),
objects AS (
    -- The JSON type (ty) and text (tx) of each field of `bench_paths()`, parsed once; NULL for
    -- a blank line, a record over $max_event_bytes, or one that is not JSON. (A JSON value
    -- other than an object has no fields, so it fails the required ones.)
    SELECT source,
        CASE WHEN line IS NOT NULL AND trim(line, E' \t\r\x0b\x0c') <> '' AND strlen(line) <= $max_event_bytes
                  AND json_valid(line) THEN struct_pack(ty := json_type(line, bench_paths()),
                                                        tx := json_extract_string(line, bench_paths())) END AS f
    FROM numbered
),
records AS (
    -- A window over the parsed fields keeps the filters below from being pushed into the
    -- parse, which would then run once per reference to a field.
    SELECT source, f, row_number() OVER () AS barrier
    FROM objects
),
fields AS (
    SELECT source,
        f.ty[1] AS event_id_t, f.tx[1] AS event_id, f.ty[2] AS user_id_t, f.tx[2] AS user_id,
        f.ty[3] AS event_type_t, f.tx[3] AS event_type, f.ty[4] AS timestamp_t, f.tx[4] AS ts_text,
        f.ty[5] AS session_id_t, f.tx[5] AS session_id, f.ty[6] AS channel_t, f.tx[6] AS channel,
        f.ty[7] AS device_t, f.tx[7] AS device, f.ty[8] AS properties_t, f.ty[9] AS consent_t,
        f.ty[10] AS value_t, f.tx[10] AS value_text, f.ty[11] AS currency_t, f.tx[11] AS currency_text,
        f.ty[12] AS quantity_t, f.tx[12] AS quantity_text, f.ty[13] AS product_id_t, f.tx[13] AS product_id,
        f.ty[14] AS category_t, f.tx[14] AS category, f.ty[15] AS page_t, f.tx[15] AS page,
        f.ty[16] AS search_query_t, f.tx[16] AS search_query, f.ty[17] AS campaign_t, f.tx[17] AS campaign,
        f.ty[18] AS order_id_t, f.tx[18] AS order_id, f.ty[19] AS duration_s_t, f.tx[19] AS duration_s,
        f.ty[20] AS duration_ms_t, f.tx[20] AS duration_ms, f.ty[21] AS duration_min_t, f.tx[21] AS duration_min,
        f.ty[22] AS analytics_t, f.ty[23] AS personalization_t, f.tx[23] AS personalization_text
    FROM records
    WHERE f IS NOT NULL
),
checked AS (
    -- After the fields_ok filter, a text field's value is its text (NULL when absent or null).
    SELECT
        source, event_id, user_id, event_type, session_id, channel, device, category, order_id,
        bench_number(value_t, value_text) AS value,
        upper(currency_text) AS currency,
        coalesce(personalization_t = 'BOOLEAN' AND personalization_text = 'true', false) AS personalization,
        -- Integer epoch milliseconds, or an RFC 3339 string with an offset.
        CASE WHEN timestamp_t IN ('UBIGINT', 'BIGINT') THEN TRY_CAST(ts_text AS HUGEINT) * 1000 END AS epoch_us,
        CASE WHEN timestamp_t = 'VARCHAR' THEN regexp_extract(
            ts_text,
            '^(\d{4}-\d{2}-\d{2})[Tt ](\d{2})(?::(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?(Z|([+-])(\d{2})(?::?(\d{2}))?)$',
            ['date', 'h', 'mi', 's', 'frac', 'tz', 'sign', 'oh', 'om']) END AS t,
        bench_required_text_ok(event_id_t, event_id, 128)
        AND bench_required_text_ok(user_id_t, user_id, 256)
        AND coalesce(event_type_t = 'VARCHAR' AND event_type IN (
                'page_view', 'product_view', 'search', 'add_to_cart', 'remove_from_cart', 'checkout_start',
                'purchase', 'refund', 'email_open', 'email_click', 'app_open', 'social_share', 'signup'), false)
        AND bench_text_ok(channel_t, channel, 1024)
        AND (NOT bench_given(channel_t) OR channel IN ('web', 'app', 'email', 'social', 'store', 'other'))
        AND bench_text_ok(session_id_t, session_id, 1024) AND bench_text_ok(device_t, device, 1024)
        AND bench_type_ok(properties_t, 'OBJECT') AND bench_type_ok(consent_t, 'OBJECT')
        AND bench_type_ok(analytics_t, 'BOOLEAN') AND bench_type_ok(personalization_t, 'BOOLEAN')
        AND bench_number_ok(value_t, value_text) AND coalesce(bench_number(value_t, value_text) >= 0, true)
        AND (bench_given(value_t) OR event_type NOT IN ('purchase', 'refund'))
        AND bench_text_ok(currency_t, currency_text, 1024)
        AND coalesce(regexp_full_match(upper(currency_text), '[A-Z]{3}'), true)
        AND (NOT bench_given(quantity_t)
             OR coalesce(quantity_t IN ('UBIGINT', 'BIGINT') AND TRY_CAST(quantity_text AS HUGEINT) >= 1, false))
        AND bench_text_ok(product_id_t, product_id, 1024) AND bench_text_ok(category_t, category, 1024)
        AND bench_text_ok(page_t, page, 1024) AND bench_text_ok(search_query_t, search_query, 1024)
        AND bench_text_ok(campaign_t, campaign, 1024) AND bench_text_ok(order_id_t, order_id, 1024)
        -- A duration: duration_s, else the first of duration_ms, duration_min given; never negative.
        AND CASE WHEN bench_given(duration_s_t)
                     THEN coalesce(isfinite(bench_number(duration_s_t, duration_s))
                                   AND bench_number(duration_s_t, duration_s) >= 0, false)
                 WHEN bench_given(duration_ms_t)
                     THEN coalesce(isfinite(bench_number(duration_ms_t, duration_ms))
                                   AND bench_number(duration_ms_t, duration_ms) >= 0, false)
                 WHEN bench_given(duration_min_t)
                     THEN coalesce(isfinite(bench_number(duration_min_t, duration_min))
                                   AND bench_number(duration_min_t, duration_min) >= 0, false)
                 ELSE true END
            AS fields_ok
    FROM fields
),
timed AS (
    -- The parts of an RFC 3339 string ('' where absent; all '' when it does not match).
    SELECT *,
        CASE WHEN t.tz = 'Z' THEN CAST(0 AS BIGINT)
             WHEN t.tz <> '' THEN (CASE WHEN t.sign = '-' THEN -1 ELSE 1 END)
                                  * (TRY_CAST(t.oh AS BIGINT) * 60 + coalesce(TRY_CAST(t.om AS BIGINT), 0)) END
            AS offset_min,
        coalesce(TRY_CAST(t.date AS DATE) IS NOT NULL
                 AND TRY_CAST(t.h AS INTEGER) <= 23
                 AND coalesce(TRY_CAST(t.mi AS INTEGER), 0) <= 59
                 AND coalesce(TRY_CAST(t.s AS INTEGER), 0) <= 59
                 AND (t.tz = 'Z' OR (TRY_CAST(t.oh AS INTEGER) <= 23 AND coalesce(TRY_CAST(t.om AS INTEGER), 0) <= 59)),
                 false) AS text_time_ok
    FROM checked
    WHERE fields_ok
),
valid AS (
    SELECT
        source, event_id, user_id, event_type, session_id, channel, device, category, value, currency,
        order_id, personalization,
        offset_min,  -- NULL for epoch milliseconds: local time is UTC
        CAST(coalesce(epoch_us,
                      CASE WHEN text_time_ok THEN
                          (TRY_CAST(t.date AS DATE) - DATE '1970-01-01') * 86400000000
                          + TRY_CAST(t.h AS BIGINT) * 3600000000
                          + coalesce(TRY_CAST(t.mi AS BIGINT), 0) * 60000000
                          + coalesce(TRY_CAST(t.s AS BIGINT), 0) * 1000000
                          + coalesce(TRY_CAST(rpad(left(t.frac, 6), 6, '0') AS BIGINT), 0)
                          - offset_min * 60000000 END) AS HUGEINT) AS ts_huge
    FROM timed
),
events AS (
    SELECT * EXCLUDE (ts_huge, personalization), CAST(ts_huge AS BIGINT) AS ts_us
    FROM valid
    WHERE ts_huge BETWEEN $earliest_us AND $latest_us
      AND personalization  -- consent: personalisation granted (a missing consent object denies)
),
as_of AS (
    SELECT
        coalesce($as_of_us, (max(ts_us) // 86400000000 + 1) * 86400000000) AS as_of_us,
        -- Days that begin before as_of: day numbers < end_day (as_of at a midnight: its day number).
        (coalesce($as_of_us, (max(ts_us) // 86400000000 + 1) * 86400000000) + 86400000000 - 1) // 86400000000
            AS end_day
    FROM events
),
unique_events AS (
    SELECT *
    FROM events
    QUALIFY row_number() OVER (PARTITION BY user_id, event_id ORDER BY ts_us, source) = 1
),
scored AS (
    SELECT u.*,
        u.ts_us // 86400000000 AS day,
        a.end_day,
        (u.ts_us + coalesce(u.offset_min, 0) * 60000000) AS local_us,  -- local time in the timestamp's offset
        CASE u.event_type WHEN 'purchase' THEN 3 WHEN 'add_to_cart' THEN 2 WHEN 'checkout_start' THEN 2
                          WHEN 'product_view' THEN 1 WHEN 'search' THEN 1 ELSE 0 END AS funnel
    FROM unique_events u, as_of a
    WHERE u.ts_us < a.as_of_us
),
-- Sessions: per user and session_id, a new session starts when the previous event of that
-- id is at least the gap earlier (Beam Sessions), or on an earlier UTC day (midnight ends a
-- session). Events without a session_id have none.
session_marks AS (
    SELECT *,
        CASE WHEN session_id IS NULL THEN NULL
             WHEN ts_us - lag(ts_us) OVER w < $gap_us
                  AND ts_us // 86400000000 = lag(ts_us) OVER w // 86400000000 THEN 0 ELSE 1 END AS opens_session
    FROM scored
    WINDOW w AS (PARTITION BY user_id, session_id ORDER BY ts_us, event_id)
),
sessioned AS (
    SELECT *,
        sum(opens_session) OVER (PARTITION BY user_id, session_id ORDER BY ts_us, event_id
                                 ROWS UNBOUNDED PRECEDING) AS session_no
    FROM session_marks
),
sessions AS (
    SELECT
        user_id, any_value(end_day) AS end_day,
        min(ts_us) // 86400000000 AS start_day,  -- a session counts on the day it started
        max(ts_us) - min(ts_us) AS duration_us,
        count(*) AS n_events,
        count_if(event_type = 'page_view') AS page_views,
        count_if(event_type = 'product_view') AS product_views,
        count_if(event_type = 'search') AS searches,
        count_if(event_type = 'add_to_cart') AS cart_adds,
        count_if(event_type = 'purchase') AS purchases
    FROM sessioned
    WHERE session_id IS NOT NULL
    GROUP BY user_id, session_id, session_no
),
session_totals AS (
    SELECT
        user_id,
        count(*) FILTER (WHERE start_day >= end_day - 30) AS sessions,
        sum(duration_us) FILTER (WHERE start_day >= end_day - 30) AS duration_us,
        sum(page_views) FILTER (WHERE start_day >= end_day - 30) AS page_views,
        sum(product_views) FILTER (WHERE start_day >= end_day - 30) AS product_views,
        sum(searches) FILTER (WHERE start_day >= end_day - 30) AS searches,
        sum(cart_adds) FILTER (WHERE start_day >= end_day - 30) AS cart_adds,
        count_if(n_events = 1 AND start_day >= end_day - 30) AS bounces,
        count_if(cart_adds > 0 AND start_day >= end_day - 30) AS cart_sessions,
        count_if(cart_adds > 0 AND purchases = 0 AND start_day >= end_day - 30) AS abandoned,
        count_if(purchases > 0 AND start_day >= end_day - 30) AS purchase_sessions,
        -- Lifetime: every session before as_of.
        count(*) AS life_sessions,
        sum(duration_us) AS life_duration_us,
        sum(page_views) AS life_page_views,
        sum(product_views) AS life_product_views,
        sum(searches) AS life_searches,
        sum(cart_adds) AS life_cart_adds,
        count_if(n_events = 1) AS life_bounces,
        count_if(cart_adds > 0) AS life_cart_sessions,
        count_if(cart_adds > 0 AND purchases = 0) AS life_abandoned,
        count_if(purchases > 0) AS life_purchase_sessions
    FROM sessions
    GROUP BY user_id
),
-- Orders: the purchase lines of one order id; without one, of one session id; else each line.
-- An order counts on the day of its first line.
orders AS (
    SELECT user_id, any_value(end_day) AS end_day, min(day) AS first_day
    FROM sessioned
    WHERE event_type = 'purchase'
    GROUP BY user_id,
             CASE WHEN order_id IS NOT NULL THEN 'o:' || order_id
                  WHEN session_id IS NOT NULL THEN 's:' || session_id
                  ELSE 'e:' || event_id END
),
order_totals AS (
    SELECT user_id, count(*) AS orders, count_if(first_day >= end_day - 90) AS orders_90d
    FROM orders
    GROUP BY user_id
),
-- Money: units per EUR from the row of the currency dated on or before the event's UTC day
-- (the first row for earlier days); a currency without rows has no rate.
rate_rows AS (
    SELECT upper(trim(currency)) AS currency, CAST(trim(date) AS DATE) - DATE '1970-01-01' AS day,
           max(units_per_eur) AS units
    FROM read_csv($fx_path, comment = '#', header = true, auto_detect = false,
                  columns = {'date': 'VARCHAR', 'currency': 'VARCHAR', 'units_per_eur': 'DOUBLE'})
    GROUP BY ALL
),
rates AS (
    SELECT currency, units,
        CASE WHEN row_number() OVER w = 1 THEN -9223372036854775807 ELSE day END AS from_day,
        coalesce(lead(day) OVER w, 9223372036854775807) AS to_day
    FROM rate_rows
    WINDOW w AS (PARTITION BY currency ORDER BY day)
),
priced AS (
    SELECT s.user_id, s.event_type,
        CASE WHEN coalesce(s.currency, $reporting_currency) = $reporting_currency THEN s.value
             ELSE s.value / r.units * t.units END AS amount  -- NULL: no rate
    FROM scored s
    LEFT JOIN rates r
           ON r.currency = coalesce(s.currency, $reporting_currency) AND s.day >= r.from_day AND s.day < r.to_day
    LEFT JOIN rates t
           ON t.currency = $reporting_currency AND s.day >= t.from_day AND s.day < t.to_day
    WHERE s.event_type IN ('purchase', 'refund')
),
money AS (
    SELECT
        user_id,
        coalesce(sum(amount) FILTER (WHERE event_type = 'purchase'), 0.0) AS spend,
        coalesce(sum(amount) FILTER (WHERE event_type = 'refund'), 0.0) AS refunded,
        count_if(amount IS NULL) AS unpriced_lines
    FROM priced
    GROUP BY user_id
),
category_counts AS (
    SELECT user_id, category, count(*) AS n
    FROM scored
    WHERE category IS NOT NULL AND day >= end_day - 30
    GROUP BY user_id, category
),
category_totals AS (
    SELECT
        user_id,
        arg_min(category, (-n, category)) AS top_category,  -- ties: the smallest name
        max(n) AS top_n,
        sum(n) AS categorised,
        -sum((n / total) * ln(n / total)) AS entropy
    FROM (SELECT *, sum(n) OVER (PARTITION BY user_id) AS total FROM category_counts)
    GROUP BY user_id
),
life_category_totals AS (
    SELECT user_id, -sum((n / total) * ln(n / total)) AS entropy
    FROM (SELECT *, sum(n) OVER (PARTITION BY user_id) AS total
          FROM (SELECT user_id, category, count(*) AS n FROM scored WHERE category IS NOT NULL
                GROUP BY user_id, category))
    GROUP BY user_id
),
totals AS (
    SELECT
        user_id, any_value(end_day) AS end_day,
        count(*) AS events,
        min(ts_us) AS first_us,
        max(ts_us) AS last_us,
        count(DISTINCT day) FILTER (WHERE day >= end_day - 7) AS active_7,
        count(DISTINCT day) FILTER (WHERE day >= end_day - 30) AS active_30,
        count(DISTINCT day) FILTER (WHERE day >= end_day - 90) AS active_90,
        max(funnel) FILTER (WHERE day >= end_day - 7) AS funnel_7,
        max(funnel) FILTER (WHERE day >= end_day - 30) AS funnel_30,
        count(*) FILTER (WHERE day >= end_day - 30) AS events_30,
        count(*) FILTER (WHERE day >= end_day - 30 AND (event_type = 'social_share' OR channel = 'social')) AS social,
        count(*) FILTER (WHERE day >= end_day - 30 AND channel = 'app') AS app,
        count(*) FILTER (WHERE day >= end_day - 30 AND channel = 'store') AS store,
        count(*) FILTER (WHERE day >= end_day - 30 AND lower(device) = 'mobile') AS mobile,
        count(*) FILTER (WHERE day >= end_day - 30 AND event_type = 'email_open') AS email_opens,
        count(*) FILTER (WHERE day >= end_day - 30 AND event_type = 'email_click') AS email_clicks,
        count(*) FILTER (WHERE day >= end_day - 30 AND local_us % 86400000000 < 21600000000) AS night,
        count(*) FILTER (WHERE day >= end_day - 30 AND local_us % 86400000000 >= 21600000000
                                                   AND local_us % 86400000000 < 43200000000) AS morning,
        count(*) FILTER (WHERE day >= end_day - 30 AND local_us % 86400000000 >= 43200000000
                                                   AND local_us % 86400000000 < 64800000000) AS afternoon,
        count(*) FILTER (WHERE day >= end_day - 30 AND local_us % 86400000000 >= 64800000000) AS evening,
        -- 1970-01-01 was a Thursday: weekday (Monday 0) = (day + 3) % 7; Saturday 5, Sunday 6.
        count(*) FILTER (WHERE day >= end_day - 30 AND (local_us // 86400000000 + 3) % 7 >= 5) AS weekend,
        count(*) FILTER (WHERE event_type = 'social_share' OR channel = 'social') AS life_social,
        count(*) FILTER (WHERE channel = 'app') AS life_app,
        count(*) FILTER (WHERE channel = 'email') AS life_email_channel,
        count(*) FILTER (WHERE lower(device) = 'mobile') AS life_mobile,
        count(*) FILTER (WHERE lower(device) = 'desktop') AS life_desktop,
        count(*) FILTER (WHERE event_type = 'email_open') AS life_email_opens,
        count(*) FILTER (WHERE event_type = 'email_click') AS life_email_clicks,
        count(*) FILTER (WHERE event_type = 'purchase') AS purchase_lines,
        count(*) FILTER (WHERE event_type = 'refund') AS refunds,
        count(DISTINCT day) FILTER (WHERE event_type = 'purchase') AS purchase_days,
        min(ts_us) FILTER (WHERE event_type = 'purchase') AS first_purchase_us,
        max(ts_us) FILTER (WHERE event_type = 'purchase') AS last_purchase_us
    FROM scored
    GROUP BY user_id
)
SELECT
    e.user_id,
    a.as_of_us,
    'daily' AS scoring,
    'v3' AS feature_version,
    e.events AS event_count,
    -- Activity level
    CAST(e.active_7 AS DOUBLE) AS active_days_7d,
    CAST(e.active_30 AS DOUBLE) AS active_days_30d,
    CAST(e.active_90 AS DOUBLE) AS active_days_90d,
    CAST(coalesce(s.sessions, 0) AS DOUBLE) AS sessions_30d,
    (a.as_of_us - e.last_us) / 86400e6 AS days_since_last_event,
    (a.as_of_us - e.first_us) / 86400e6 AS tenure_days,
    -- Behaviour per session (30 days)
    bench_ratio(s.page_views, s.sessions) AS page_views_per_session,
    bench_ratio(s.product_views, s.sessions) AS product_views_per_session,
    bench_ratio(s.searches, s.sessions) AS searches_per_session,
    bench_ratio(s.cart_adds, s.sessions) AS cart_adds_per_session,
    bench_ratio(s.duration_us / 1e6, s.sessions) AS avg_session_duration_s,
    bench_ratio(s.bounces, s.sessions) AS bounce_rate,
    bench_ratio(s.abandoned, s.cart_sessions) AS cart_abandonment_rate,
    bench_ratio(s.purchase_sessions, s.sessions) AS purchase_session_share,
    CAST(coalesce(e.funnel_7, 0) AS DOUBLE) AS funnel_stage_7d,
    -- Channels, devices, e-mail (30 days)
    bench_ratio(e.social, e.events_30) AS social_share,
    bench_ratio(e.app, e.events_30) AS app_share,
    bench_ratio(e.store, e.events_30) AS store_share,
    bench_ratio(e.mobile, e.events_30) AS mobile_share,
    CAST(e.email_opens AS DOUBLE) AS email_opens_30d,
    (e.email_clicks + 1.0) / (e.email_opens + 2.0) AS email_ctr,
    -- Time pattern, local time (30 days)
    bench_ratio(e.night, e.events_30) AS share_night,
    bench_ratio(e.morning, e.events_30) AS share_morning,
    bench_ratio(e.afternoon, e.events_30) AS share_afternoon,
    bench_ratio(e.evening, e.events_30) AS share_evening,
    bench_ratio(e.weekend, e.events_30) AS weekend_share,
    -- Affinity (30 days)
    bench_ratio(c.top_n, c.categorised) AS top_category_share,
    coalesce(c.entropy, 0.0) + 0.0 AS category_entropy,
    -- Value (lifetime, reporting currency)
    CAST(coalesce(o.orders, 0) AS DOUBLE) AS orders,
    CAST(coalesce(o.orders_90d, 0) AS DOUBLE) AS orders_90d,
    (a.as_of_us - CASE WHEN e.purchase_lines > 0 THEN e.last_purchase_us ELSE e.first_us END) / 86400e6 AS recency_days,
    greatest(0.0, coalesce(m.spend, 0.0) - coalesce(m.refunded, 0.0)) AS spend_total,
    bench_ratio(greatest(0.0, coalesce(m.spend, 0.0) - coalesce(m.refunded, 0.0)), o.orders) AS avg_order_value,
    bench_ratio(e.refunds, e.purchase_lines) AS refund_rate,
    -- Behaviour over the whole history, and the evidence of each rate
    bench_ratio(s.life_page_views, s.life_sessions) AS lifetime_page_views_per_session,
    bench_ratio(s.life_product_views, s.life_sessions) AS lifetime_product_views_per_session,
    bench_ratio(s.life_searches, s.life_sessions) AS lifetime_searches_per_session,
    bench_ratio(s.life_cart_adds, s.life_sessions) AS lifetime_cart_adds_per_session,
    bench_ratio(s.life_duration_us / 1e6, s.life_sessions) AS lifetime_avg_session_duration_s,
    bench_ratio(s.life_bounces, s.life_sessions) AS lifetime_bounce_rate,
    bench_ratio(s.life_purchase_sessions, s.life_sessions) AS lifetime_purchase_session_share,
    bench_ratio(s.life_abandoned, s.life_cart_sessions) AS lifetime_cart_abandonment_rate,
    bench_ratio(e.life_social, e.events) AS lifetime_social_share,
    bench_ratio(e.life_app, e.events) AS lifetime_app_share,
    bench_ratio(e.life_email_channel, e.events) AS lifetime_email_channel_share,
    bench_ratio(e.life_mobile, e.events) AS lifetime_mobile_share,
    bench_ratio(e.life_desktop, e.events) AS lifetime_desktop_share,
    coalesce(lc.entropy, 0.0) + 0.0 AS lifetime_category_entropy,
    bench_ratio(e.life_email_clicks, e.life_email_opens) AS lifetime_email_ctr,
    e.life_email_opens / greatest(coalesce(s.life_sessions, 0), 1.0) AS lifetime_email_opens_per_session,
    CAST(coalesce(s.life_sessions, 0) AS DOUBLE) AS lifetime_sessions,
    CAST(e.events AS DOUBLE) AS lifetime_events,
    CAST(coalesce(s.life_cart_sessions, 0) AS DOUBLE) AS lifetime_cart_sessions,
    CAST(e.life_email_opens AS DOUBLE) AS lifetime_email_opens,
    -- Profile facts
    e.first_us AS first_seen_us,
    e.last_us AS last_event_us,
    e.first_purchase_us,
    e.last_purchase_us,
    e.purchase_days,
    coalesce(m.unpriced_lines, 0) AS unpriced_lines,
    c.top_category AS top_category_30d,
    ['awareness', 'consideration', 'intent', 'purchase'][coalesce(e.funnel_30, 0) + 1] AS funnel_stage_30d,
    $reporting_currency AS reporting_currency
FROM totals e
CROSS JOIN as_of a
LEFT JOIN session_totals s USING (user_id)
LEFT JOIN order_totals o USING (user_id)
LEFT JOIN money m USING (user_id)
LEFT JOIN category_totals c USING (user_id)
LEFT JOIN life_category_totals lc USING (user_id)
ORDER BY e.user_id
