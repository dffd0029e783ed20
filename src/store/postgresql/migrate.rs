//! PostgreSQL's schema: the migrations under `price_alertd_schema.version`,
//! in one transaction, under an advisory lock taken before it begins.

use postgres::Client;

use crate::config::PostgresConfig;

use super::super::{Unusable, failure};

/// The schema version this build migrates a PostgreSQL database to
/// (`price_alertd_schema.version`).
pub const SCHEMA_VERSION: i32 = 10;

pub(super) fn newer(config: &PostgresConfig, version: i32) -> anyhow::Error {
    failure(
        Unusable::Data,
        format!(
            "{} is at schema version {version}, newer than this price-alertd's {SCHEMA_VERSION}: \
             a newer version migrated it",
            config.display
        ),
    )
}

/// The schema version, 0 for a database this daemon never migrated.
pub(super) fn schema_version(
    client: &mut impl postgres::GenericClient,
) -> Result<i32, postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('price_alertd_schema') IS NOT NULL", &[])?
        .try_get(0)?;
    if !exists {
        return Ok(0);
    }
    let row = client.query_opt("SELECT version FROM price_alertd_schema WHERE id = 1", &[])?;
    row.map_or(Ok(0), |row| row.try_get(0))
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction, under an
/// advisory lock, so that daemons starting at once migrate once. The lock is
/// taken before the transaction begins: a transaction that began before the
/// winner committed could still see the catalog without the winner's tables.
pub fn migrate(client: &mut Client) -> Result<(), postgres::Error> {
    super::connect::without_statement_timeout(client, |client| {
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let migrated = migrate_locked(client);
        let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        migrated?;
        unlocked.map(|_| ())
    })
}

fn migrate_locked(client: &mut Client) -> Result<(), postgres::Error> {
    let mut transaction = client.transaction()?;
    let version = schema_version(&mut transaction)?;
    if version < 1 {
        transaction.batch_execute(
            &MIGRATION_1
                .replace("{level}", &format!("({})", crate::store::shared::LEVEL))
                .replace("{alert_changed}", ALERT_CHANGED)
                .replace("{cluster}", crate::store::cluster::SCHEMA),
        )?;
    }
    if version < 2 {
        transaction.batch_execute(MIGRATION_2)?;
    }
    if version < 3 {
        transaction.batch_execute(MIGRATION_3)?;
    }
    if version < 4 {
        transaction.batch_execute(&MIGRATION_4.replace("{alert_changed}", ALERT_CHANGED))?;
        transaction.batch_execute(crate::store::cluster::REACTORS_SCHEMA)?;
    }
    if version < 5 {
        transaction.batch_execute(MIGRATION_5)?;
    }
    if version < 6 {
        transaction.batch_execute(&MIGRATION_6.replace("{alert_changed}", ALERT_CHANGED_6))?;
    }
    if version < 7 {
        transaction.batch_execute(crate::store::outbox::ATTEMPTS_SCHEMA_PG)?;
    }
    if version < 8 {
        transaction.batch_execute(MIGRATION_8)?;
    }
    if version < 9 {
        transaction
            .batch_execute(&crate::store::watermarks::HOLDS_SCHEMA.replace("{bool}", "BOOLEAN"))?;
    }
    if version < 10 {
        transaction.batch_execute(&crate::store::channels::SCHEMA.replace("{bigint}", "BIGINT"))?;
        // Two version-4 UUIDs: 244 bits from the server's strong random source.
        transaction.batch_execute(&crate::store::channels::KEY_SCHEMA.replace(
            "{key}",
            "replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')",
        ))?;
    }
    if version < SCHEMA_VERSION {
        transaction.execute(
            "UPDATE price_alertd_schema SET version = $1 WHERE id = 1",
            &[&SCHEMA_VERSION],
        )?;
    }
    transaction.commit()
}

/// When an update of an alert is a change (a re-arm, 0 -> 1, or an edit of
/// what the evaluation reads; never the claim, 1 -> 0): the condition of
/// the trigger that numbers the change (migration 1) and of the one that
/// notifies it (migration 4), one text so that they never part.
const ALERT_CHANGED: &str = "WHEN (NEW.enabled = '1' AND (OLD.enabled IS DISTINCT FROM NEW.enabled
    OR OLD.ticker IS DISTINCT FROM NEW.ticker OR OLD.condition IS DISTINCT FROM NEW.condition
    OR OLD.target_price IS DISTINCT FROM NEW.target_price
    OR OLD.reference_price IS DISTINCT FROM NEW.reference_price
    OR OLD.expires_at IS DISTINCT FROM NEW.expires_at))";

/// [`ALERT_CHANGED`] since migration 6: waking a snoozed alert (or snoozing
/// it), moving a channel's upper level and changing a re-arm band are edits
/// too.
pub(super) const ALERT_CHANGED_6: &str =
    "WHEN (NEW.enabled = '1' AND (OLD.enabled IS DISTINCT FROM NEW.enabled
    OR OLD.ticker IS DISTINCT FROM NEW.ticker OR OLD.condition IS DISTINCT FROM NEW.condition
    OR OLD.target_price IS DISTINCT FROM NEW.target_price
    OR OLD.reference_price IS DISTINCT FROM NEW.reference_price
    OR OLD.upper_price IS DISTINCT FROM NEW.upper_price
    OR OLD.rearm_band IS DISTINCT FROM NEW.rearm_band
    OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
    OR OLD.snoozed_until IS DISTINCT FROM NEW.snoozed_until))";

/// The advisory lock key migrations take ("pa-migr" in ASCII).
pub(super) const MIGRATION_LOCK: i64 = 0x70_61_2d_6d_69_67_72;

/// Everything SQLite's six migrations made, at once: the contract's tables
/// (kept as the application made them if they exist), armings and change
/// numbers kept by a trigger, the outbox, observations, watermarks, runs,
/// and the installation id.
const MIGRATION_1: &str = r#"
CREATE TABLE price_alertd_schema (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO price_alertd_schema (id, version) VALUES (1, 0);

CREATE TABLE IF NOT EXISTS price_alerts (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    ticker TEXT NOT NULL,
    condition TEXT NOT NULL,
    target_price DOUBLE PRECISION NOT NULL,
    reference_price DOUBLE PRECISION,
    enabled INTEGER NOT NULL DEFAULT 1,
    triggered_at TEXT,
    triggered_price DOUBLE PRECISION,
    created_at TEXT NOT NULL,
    user_id TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS idx_price_alerts_enabled ON price_alerts (ticker, enabled);
CREATE TABLE IF NOT EXISTS quotes (
    ticker TEXT PRIMARY KEY,
    price DOUBLE PRECISION NOT NULL,
    updated_at TEXT NOT NULL
);
-- `expires_at` is the application's to write; it may have added it.
ALTER TABLE price_alerts ADD COLUMN IF NOT EXISTS expires_at TEXT;
ALTER TABLE price_alerts ADD COLUMN expired_at TEXT;

-- Invariant 3: every arming of an alert, its insertion or a re-enable by
-- anyone, takes a fresh number from one sequence. Existing alerts keep their
-- id as their first arming.
ALTER TABLE price_alerts ADD COLUMN arming BIGINT NOT NULL DEFAULT 0;
UPDATE price_alerts SET arming = id;
CREATE SEQUENCE price_alerts_arming;
-- The next arming is one past the largest id, as on SQLite.
SELECT setval('price_alerts_arming', coalesce((SELECT max(id) FROM price_alerts), 0) + 1, false);

-- What changed: the id of the transaction that last inserted, re-armed or
-- edited an alert (or wrote a quote). See `store::postgresql`.
ALTER TABLE price_alerts ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE quotes ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX price_alerts_changed ON price_alerts (change_seq);
CREATE INDEX price_alerts_level ON price_alerts (ticker, condition, ({level})) WHERE enabled = '1';
CREATE INDEX idx_price_alerts_expiry ON price_alerts (expires_at) WHERE enabled = '1' AND expires_at IS NOT NULL;
CREATE INDEX quotes_changed ON quotes (change_seq);

CREATE FUNCTION price_alerts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.arming := nextval('price_alerts_arming');
    ELSIF OLD.enabled = '0' THEN
        NEW.arming := nextval('price_alerts_arming');
    END IF;
    NEW.change_seq := pg_current_xact_id()::text::bigint;
    RETURN NEW;
END $$;
CREATE TRIGGER price_alerts_armed_on_insert BEFORE INSERT ON price_alerts
FOR EACH ROW EXECUTE FUNCTION price_alerts_track();
-- A re-arm (0 -> 1) takes an arming and a change number; an edit of what the
-- evaluation reads, a change number. The claim (1 -> 0) takes neither.
CREATE TRIGGER price_alerts_changed_on_update BEFORE UPDATE ON price_alerts
FOR EACH ROW {alert_changed}
EXECUTE FUNCTION price_alerts_track();

CREATE FUNCTION quotes_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_seq := pg_current_xact_id()::text::bigint;
    RETURN NEW;
END $$;
CREATE TRIGGER quotes_changed_on_insert BEFORE INSERT ON quotes
FOR EACH ROW EXECUTE FUNCTION quotes_track();
CREATE TRIGGER quotes_changed_on_update BEFORE UPDATE ON quotes
FOR EACH ROW WHEN (OLD.price IS DISTINCT FROM NEW.price OR OLD.updated_at IS DISTINCT FROM NEW.updated_at)
EXECUTE FUNCTION quotes_track();

-- A text time as the application wrote it, or NULL when it is not one:
-- a malformed expiry must not fail the whole expiry statement.
CREATE FUNCTION price_alertd_time(value TEXT) RETURNS TIMESTAMPTZ LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN value::timestamptz;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END $$;

-- Invariant 2: one row per claimed alert, inserted in the claim's
-- transaction. The body is fixed at the claim. Leased rows move their
-- `next_attempt_at` to the lease's end, out of the due range.
CREATE TABLE outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    alert_id BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,       -- unix milliseconds
    lease_owner TEXT,
    lease_until BIGINT,                    -- unix milliseconds
    last_error TEXT,
    delivered_at TEXT,
    dead_at TEXT
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
CREATE INDEX outbox_dead ON outbox (id) WHERE state = 'dead';
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX outbox_pending ON outbox (id) WHERE state = 'pending';

CREATE TABLE observations (
    ticker TEXT PRIMARY KEY,
    price DOUBLE PRECISION NOT NULL,
    quote_time TEXT NOT NULL,
    observed_at TEXT NOT NULL
);
CREATE TABLE job_runs (
    job TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    result TEXT NOT NULL CHECK (result IN ('ok', 'failed')),
    detail TEXT NOT NULL,
    last_success_at TEXT,
    member TEXT                        -- who ran it (store::cluster::Me)
);
{cluster}
CREATE TABLE job_watermarks (
    job TEXT PRIMARY KEY,
    change_seq BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);
-- 96 random bits from the server's strong generator, chosen once.
CREATE TABLE installation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    installation_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
INSERT INTO installation (id, installation_id, created_at)
VALUES (1, substr(encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), 'hex'), 1, 24),
        to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'));
"#;

/// Each event's user, for routing by `{user_id}` (`deliver`): the claim
/// stores it beside the body; the events still to deliver take theirs from
/// their bodies (which the daemon wrote: always JSON).
const MIGRATION_2: &str = "
ALTER TABLE outbox ADD COLUMN user_id TEXT;
UPDATE outbox SET user_id = body::jsonb -> 'data' ->> 'user_id' WHERE state <> 'delivered';
";

/// Repeating alerts: the application's `cooldown` (added if it has none),
/// and when the claim of an alert with one makes it due to be re-armed (unix
/// ms), through a partial index of those waiting.
const MIGRATION_3: &str = "
ALTER TABLE price_alerts ADD COLUMN IF NOT EXISTS cooldown TEXT;
ALTER TABLE price_alerts ADD COLUMN rearm_at BIGINT;
CREATE INDEX price_alerts_rearm ON price_alerts (rearm_at) WHERE rearm_at IS NOT NULL;
";

/// Jobs that react to changes (`on_change`), with their reacting members
/// (`store::cluster`'s `job_reactors`): each change of quotes or
/// alerts notifies `price_alertd_changes` at its commit, naming its tickers
/// (a JSON array; `*` beyond 200 tickers, as a payload holds 8000 bytes).
/// Quotes once per statement, from its transition table: a feed writes
/// them in batches. Alerts once per changed row, with the `WHEN` of the
/// change number's trigger (`ALERT_CHANGED`), so that the claim (enabled 1 -> 0) runs no
/// trigger at all; a transaction's notifications of one ticker are one.
const MIGRATION_4: &str = r#"
CREATE FUNCTION price_alertd_notify_quotes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tickers TEXT[];
BEGIN
    SELECT array_agg(ticker) INTO tickers FROM (
        SELECT DISTINCT ticker FROM changed
        WHERE change_seq = pg_current_xact_id()::text::bigint LIMIT 201) named;
    IF tickers IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('price_alertd_changes',
        CASE WHEN cardinality(tickers) > 200 THEN '*' ELSE to_json(tickers)::text END);
    RETURN NULL;
END $$;
CREATE TRIGGER quotes_notify_on_insert AFTER INSERT ON quotes
REFERENCING NEW TABLE AS changed
FOR EACH STATEMENT EXECUTE FUNCTION price_alertd_notify_quotes();
CREATE TRIGGER quotes_notify_on_update AFTER UPDATE ON quotes
REFERENCING NEW TABLE AS changed
FOR EACH STATEMENT EXECUTE FUNCTION price_alertd_notify_quotes();

CREATE FUNCTION price_alertd_notify_alert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('price_alertd_changes', json_build_array(NEW.ticker)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER price_alerts_notify_on_insert AFTER INSERT ON price_alerts
FOR EACH ROW EXECUTE FUNCTION price_alertd_notify_alert();
CREATE TRIGGER price_alerts_notify_on_update AFTER UPDATE ON price_alerts
FOR EACH ROW {alert_changed}
EXECUTE FUNCTION price_alertd_notify_alert();
"#;

/// Quotes' changes become a log (`change_log`), as on SQLite (migration 11
/// there; alerts keep their number in their rows here): one set-based
/// insert per statement, from its transition tables, where a PL/pgSQL
/// trigger per row stamped the transaction's id into the quote, which
/// halved a feed's write rate. The same trigger notifies the tickers it
/// logged (as migration 4's did). An update logs only the rows whose price
/// or time changed. The log starts with every quote's last change, so that
/// no job reads everything again.
const MIGRATION_5: &str = r#"
CREATE TABLE change_log (
    change_seq BIGINT NOT NULL,        -- the writing transaction's id
    quote_ticker TEXT
);
CREATE INDEX change_log_seq ON change_log (change_seq);
INSERT INTO change_log (change_seq, quote_ticker)
    SELECT change_seq, ticker::text FROM quotes WHERE change_seq > 0;
CREATE TABLE change_log_pruned (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    through BIGINT NOT NULL            -- changes up to it may be gone
);
INSERT INTO change_log_pruned (id, through) VALUES (1, 0);

DROP TRIGGER quotes_changed_on_insert ON quotes;
DROP TRIGGER quotes_changed_on_update ON quotes;
DROP FUNCTION quotes_track();
DROP TRIGGER quotes_notify_on_insert ON quotes;
DROP TRIGGER quotes_notify_on_update ON quotes;
DROP FUNCTION price_alertd_notify_quotes();
ALTER TABLE quotes DROP COLUMN change_seq;

CREATE FUNCTION price_alertd_quotes_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tickers TEXT[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        WITH logged AS (
            INSERT INTO change_log (change_seq, quote_ticker)
            SELECT pg_current_xact_id()::text::bigint, ticker::text FROM changed
            RETURNING quote_ticker)
        SELECT array_agg(quote_ticker) INTO tickers
        FROM (SELECT DISTINCT quote_ticker FROM logged LIMIT 201) named;
    ELSE
        WITH logged AS (
            INSERT INTO change_log (change_seq, quote_ticker)
            SELECT pg_current_xact_id()::text::bigint, n.ticker::text
            FROM changed AS n LEFT JOIN before AS o ON o.ticker = n.ticker
            WHERE o.ticker IS NULL OR o.price IS DISTINCT FROM n.price
               OR o.updated_at IS DISTINCT FROM n.updated_at
            RETURNING quote_ticker)
        SELECT array_agg(quote_ticker) INTO tickers
        FROM (SELECT DISTINCT quote_ticker FROM logged LIMIT 201) named;
    END IF;
    IF tickers IS NOT NULL THEN
        PERFORM pg_notify('price_alertd_changes',
            CASE WHEN cardinality(tickers) > 200 THEN '*' ELSE to_json(tickers)::text END);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER quotes_changed_on_insert AFTER INSERT ON quotes
REFERENCING NEW TABLE AS changed
FOR EACH STATEMENT EXECUTE FUNCTION price_alertd_quotes_changed();
CREATE TRIGGER quotes_changed_on_update AFTER UPDATE ON quotes
REFERENCING OLD TABLE AS before NEW TABLE AS changed
FOR EACH STATEMENT EXECUTE FUNCTION price_alertd_quotes_changed();
"#;

/// Trigger policies, as SQLite's migration 12: the application's
/// `snoozed_until`, `max_triggers`, `upper_price` and `rearm_band` (added
/// if it has none), how many times the claim fired each alert, the prices a
/// banded alert's quote must come back to, a partial index of the snoozed,
/// an index of channels' upper levels, two of the alerts waiting for their
/// price to come back (which leave the index of those waiting out a
/// cooldown only), and the two triggers of an alert's change again, with
/// `ALERT_CHANGED_6`.
const MIGRATION_6: &str = r#"
ALTER TABLE price_alerts ADD COLUMN IF NOT EXISTS snoozed_until TEXT;
ALTER TABLE price_alerts ADD COLUMN IF NOT EXISTS max_triggers BIGINT;
ALTER TABLE price_alerts ADD COLUMN IF NOT EXISTS upper_price DOUBLE PRECISION;
ALTER TABLE price_alerts ADD COLUMN IF NOT EXISTS rearm_band DOUBLE PRECISION;
ALTER TABLE price_alerts ADD COLUMN trigger_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE price_alerts ADD COLUMN return_below DOUBLE PRECISION;
ALTER TABLE price_alerts ADD COLUMN return_above DOUBLE PRECISION;
CREATE INDEX price_alerts_return_below ON price_alerts (ticker, return_below)
    WHERE return_below IS NOT NULL AND enabled = '0';
CREATE INDEX price_alerts_return_above ON price_alerts (ticker, return_above)
    WHERE return_above IS NOT NULL AND enabled = '0';
DROP INDEX price_alerts_rearm;
CREATE INDEX price_alerts_rearm ON price_alerts (rearm_at)
    WHERE rearm_at IS NOT NULL AND return_below IS NULL AND return_above IS NULL;
CREATE INDEX price_alerts_snoozed ON price_alerts (id) WHERE snoozed_until IS NOT NULL;
CREATE INDEX price_alerts_upper ON price_alerts (ticker, condition, upper_price)
    WHERE enabled = '1' AND upper_price IS NOT NULL;
DROP TRIGGER price_alerts_changed_on_update ON price_alerts;
CREATE TRIGGER price_alerts_changed_on_update BEFORE UPDATE ON price_alerts
FOR EACH ROW {alert_changed}
EXECUTE FUNCTION price_alerts_track();
DROP TRIGGER price_alerts_notify_on_update ON price_alerts;
CREATE TRIGGER price_alerts_notify_on_update AFTER UPDATE ON price_alerts
FOR EACH ROW {alert_changed}
EXECUTE FUNCTION price_alertd_notify_alert();
"#;

/// The attempts by event without a unique key: a primary key made every
/// insert a speculative one (`ON CONFLICT`), the most of what recording
/// attempts cost delivery (BENCHMARKS.md). An attempt recorded twice (an
/// exchange whose commit was not heard of, tried again) is read once
/// (`store::outbox`'s `ATTEMPTS`).
const MIGRATION_8: &str = "
ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_pkey;
CREATE INDEX delivery_attempts_event ON delivery_attempts (outbox_id);
";
