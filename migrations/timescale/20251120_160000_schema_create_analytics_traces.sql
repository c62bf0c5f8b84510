-- Migration: Analytics traces as a hypertable, compressed after 7 days, with an hourly continuous aggregate
-- ID: 20251120_160000_schema_create_analytics_traces
-- Version: 1.0.0
-- Database: timescale
-- Author: platform-team@example.com
-- Created: 2025-11-20
-- Breaking: false
-- Dependencies: []
-- txmode: none

-- Continuous aggregates cannot be created inside a transaction, hence `txmode: none`:
-- every statement runs on its own; mreg records each one's progress (a batch_checkpoint
-- statement) and resumes after the last one done if the run is interrupted. Statements
-- are written to be safe to run again (IF NOT EXISTS, if_not_exists => TRUE).

-- Phase 1: EXPAND
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE IF NOT EXISTS analytics_traces (
  time TIMESTAMPTZ NOT NULL,
  trace_id TEXT NOT NULL,
  service TEXT NOT NULL,
  operation TEXT NOT NULL,
  duration_ms DOUBLE PRECISION NOT NULL,
  status_code INTEGER
);

SELECT create_hypertable('analytics_traces', by_range('time', INTERVAL '1 day'), if_not_exists => TRUE);

CREATE INDEX IF NOT EXISTS idx_analytics_traces_service_time ON analytics_traces (service, time DESC);

ALTER TABLE analytics_traces SET (
  timescaledb.compress,
  timescaledb.compress_segmentby = 'service',
  timescaledb.compress_orderby = 'time DESC'
);

SELECT add_compression_policy('analytics_traces', INTERVAL '7 days', if_not_exists => TRUE);

INSERT INTO analytics_traces (time, trace_id, service, operation, duration_ms, status_code)
SELECT NOW() - g * INTERVAL '1 minute', 't' || g, (ARRAY['api', 'worker', 'graph'])[1 + g % 3],
       'op' || (g % 5), 5 + (g % 200), CASE WHEN g % 50 = 0 THEN 500 ELSE 200 END
FROM generate_series(1, 2000) AS g;

CREATE MATERIALIZED VIEW IF NOT EXISTS analytics_traces_hourly
WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, service,
       count(*) AS calls, avg(duration_ms) AS avg_duration_ms, max(duration_ms) AS max_duration_ms
FROM analytics_traces
GROUP BY bucket, service
WITH NO DATA;

SELECT add_continuous_aggregate_policy('analytics_traces_hourly',
  start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
  schedule_interval => INTERVAL '1 hour', if_not_exists => TRUE);

CALL refresh_continuous_aggregate('analytics_traces_hourly', NULL, NULL);

-- Rollback: drop the aggregate, its policy and the hypertable
DROP MATERIALIZED VIEW IF EXISTS analytics_traces_hourly;
DROP TABLE IF EXISTS analytics_traces;

-- Validation:
-- check is_hypertable (post): sql:SELECT count(*) AS count FROM timescaledb_information.hypertables WHERE hypertable_name = 'analytics_traces'; expect: {"count": 1}
-- check aggregate_filled (post): sql:SELECT count(*) > 0 AS filled FROM analytics_traces_hourly; expect: {"filled": true}
