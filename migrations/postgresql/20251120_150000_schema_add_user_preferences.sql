-- Migration: Add user preferences table
-- ID: 20251120_150000_schema_add_user_preferences
-- Version: 1.2.0
-- Database: postgresql
-- Author: platform-team@example.com
-- Created: 2025-11-20
-- Breaking: false
-- Dependencies: [20251120_140000_schema_create_users]
-- Max-Retries: 3
-- Timeout: 60000

-- The seed's "Example Migration with Rollback". Differences: ids are gen_random_uuid()
-- (built into PostgreSQL 13+, no uuid-ossp extension needed) and user_id follows
-- users.id (BIGINT). The index is built in the same transaction as its new, empty
-- table, so CONCURRENTLY is not needed.

-- Phase 1: EXPAND
BEGIN;

CREATE TABLE user_preferences (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  preferences JSONB NOT NULL DEFAULT '{}',
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  UNIQUE(user_id)
);

CREATE INDEX idx_user_preferences_user_id
  ON user_preferences(user_id);

COMMIT;

-- Rollback: Drop user preferences table
BEGIN;
DROP TABLE IF EXISTS user_preferences CASCADE;
COMMIT;

-- Validation:
-- check users_exist (pre): sql:SELECT count(*) AS count FROM information_schema.tables WHERE table_name = 'users'; expect: {"count": 1}
-- check verify_table_exists (post): sql:SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'user_preferences'; expect: {"count": 1}
