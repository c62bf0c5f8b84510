-- Migration: Add users.email_verified without downtime (expand, migrate, contract)
-- ID: 20251120_143000_schema_add_email_verification
-- Version: 1.1.0
-- Database: postgresql
-- Author: platform-team@example.com
-- Created: 2025-11-20
-- Breaking: false
-- Dependencies: [20251120_140000_schema_create_users]
-- txmode: none

-- The seed's three-phase "add a required column". The expand phase adds the column
-- without a default first and sets the default separately, so existing rows hold NULL
-- (to be backfilled) while new rows get FALSE. CREATE INDEX CONCURRENTLY cannot run
-- inside a transaction, hence `txmode: none`: mreg records each statement's progress
-- and resumes after the last one done if the run is interrupted.

-- Phase 1: EXPAND
ALTER TABLE users ADD COLUMN IF NOT EXISTS email_verified BOOLEAN;
ALTER TABLE users ALTER COLUMN email_verified SET DEFAULT FALSE;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_users_email_verified ON users(email_verified);

-- Phase 2: MIGRATE
-- Backfill existing users in batches of 1000 ids, one transaction and one
-- batch_checkpoint per batch; an interrupted backfill resumes at its last checkpoint.
-- Backfill: table=users key=id batch_size=1000
UPDATE users
SET email_verified = (email_confirmed_at IS NOT NULL)
WHERE id >= :lo AND id < :hi AND email_verified IS NULL;

-- Phase 3: CONTRACT
-- After every application instance writes email_verified: make it required.
ALTER TABLE users ALTER COLUMN email_verified SET NOT NULL;

-- Rollback (contract): make the column optional again
ALTER TABLE users ALTER COLUMN email_verified DROP NOT NULL;

-- Rollback (migrate): forget the backfilled values
UPDATE users SET email_verified = NULL WHERE email_verified IS NOT NULL;

-- Rollback (expand): drop the index and the column
DROP INDEX CONCURRENTLY IF EXISTS idx_users_email_verified;
ALTER TABLE users DROP COLUMN IF EXISTS email_verified;

-- Validation:
-- check expand.column_added (post): sql:SELECT count(*) AS count FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'email_verified'; expect: {"count": 1}
-- check migrate.backfilled (post): sql:SELECT count(*) AS count FROM users WHERE email_verified IS NULL; expect: {"count": 0}
-- check contract.required (post): sql:SELECT is_nullable FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'email_verified'; expect: {"is_nullable": "NO"}
