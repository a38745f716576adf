-- The event store of the `eventsourcing` library (application "Ledger", text ids),
-- with a hash-chain link on every row, written by a trigger in the insert transaction.

CREATE TABLE ledger_events (
    originator_id text NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigserial,
    chain_prev bigint NOT NULL,
    chain_hash bytea NOT NULL,
    PRIMARY KEY (originator_id, originator_version)
) WITH (
    autovacuum_enabled = true,
    autovacuum_vacuum_threshold = 100000000,
    autovacuum_vacuum_scale_factor = 0.5,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01
);

CREATE UNIQUE INDEX ledger_events_notification_id_idx ON ledger_events (notification_id ASC);

-- The composite type the library's insert statement unnests.
CREATE TYPE stored_event_text AS (
    originator_id text,
    originator_version bigint,
    topic text,
    state bytea
);

-- hash(n) = sha256(hash(prev) || int8(position) || len32(oid) || oid || int8(version)
--                  || len32(topic) || topic || len32(state) || state)
-- The library takes LOCK TABLE ... IN EXCLUSIVE MODE before inserting, so the last row
-- read here is the last committed event and positions follow commit order. The check
-- below turns any future change of that behaviour into an error instead of a fork.
CREATE FUNCTION ledger_events_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    prev_id bigint;
    prev_hash bytea;
    oid bytea;
    top bytea;
BEGIN
    SELECT notification_id, chain_hash INTO prev_id, prev_hash
      FROM ledger_events ORDER BY notification_id DESC LIMIT 1;
    IF prev_id IS NULL THEN
        prev_id := 0;
        prev_hash := decode(repeat('00', 32), 'hex');
    ELSIF prev_id >= NEW.notification_id THEN
        RAISE EXCEPTION 'ledger hash chain: position % is not after %', NEW.notification_id, prev_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    oid := convert_to(NEW.originator_id, 'UTF8');
    top := convert_to(NEW.topic, 'UTF8');
    NEW.chain_prev := prev_id;
    NEW.chain_hash := sha256(
        prev_hash
        || int8send(NEW.notification_id)
        || int4send(octet_length(oid)) || oid
        || int8send(NEW.originator_version)
        || int4send(octet_length(top)) || top
        || int4send(octet_length(NEW.state)) || NEW.state
    );
    RETURN NEW;
END
$$;

CREATE TRIGGER ledger_events_chain BEFORE INSERT ON ledger_events
    FOR EACH ROW EXECUTE FUNCTION ledger_events_chain();

-- The log is append-only: refuse UPDATE, DELETE and TRUNCATE outright. (A superuser can
-- still disable triggers; that is what `mission-ledger audit verify` is for.)
CREATE FUNCTION ledger_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER ledger_events_append_only BEFORE UPDATE OR DELETE ON ledger_events
    FOR EACH ROW EXECUTE FUNCTION ledger_events_append_only();
CREATE TRIGGER ledger_events_no_truncate BEFORE TRUNCATE ON ledger_events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_events_append_only();

-- Raised inside an insert transaction (after the table lock is taken) when an aggregate
-- the command *read* but did not write has changed since: for example a Mission that was
-- suspended while a Mandate was being issued under it. The unique_violation code makes the
-- writer treat it like any other optimistic-concurrency conflict and retry from a fresh read.
CREATE FUNCTION ledger_expect_version(expected_id text, expected_version bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    current_version bigint;
BEGIN
    SELECT coalesce(max(originator_version), 0) INTO current_version
      FROM ledger_events WHERE originator_id = expected_id;
    IF current_version <> expected_version THEN
        RAISE EXCEPTION 'ledger: % changed (version % is not the % that was read)',
            expected_id, current_version, expected_version
            USING ERRCODE = 'unique_violation';
    END IF;
END
$$;

-- Idempotency-Key records, inserted in the same transaction as the events they describe.
CREATE TABLE idempotency_records (
    scope text NOT NULL,
    key text NOT NULL,
    request_hash text NOT NULL,
    originator_id text NOT NULL,
    originator_version bigint NOT NULL,
    status_code integer NOT NULL,
    response text,
    created_at bigint NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_records_created_at ON idempotency_records (created_at);

-- One row per read model: the last log position it has applied (same transaction as its rows).
CREATE TABLE projection_tracking (
    projection text PRIMARY KEY,
    position bigint NOT NULL
);
