// Migration: Canonical entity ids (the seed's Neo4j pattern)
// ID: 20251120_153000_schema_add_canonical_id
// Version: 1.1.0
// Database: neo4j
// Author: platform-team@example.com
// Created: 2025-11-20
// Breaking: false
// Dependencies: [20251120_152000_data_seed_entities]
// txmode: none

// Neo4j 5 syntax (`e.canonical_id IS NULL` rather than the seed's `NOT EXISTS(e.canonical_id)`).
// The index is a schema command: it runs in its own auto-commit transaction (txmode: none),
// never beside data writes; each statement's progress is recorded, so an interrupted run
// resumes after the last statement done.

// Phase 1: EXPAND
CREATE INDEX entity_canonical_id IF NOT EXISTS FOR (e:Entity) ON (e.canonical_id);

MATCH (e:Entity)
WHERE e.canonical_id IS NULL
SET e.canonical_id = e.id
RETURN count(e);

// Phase 2: MIGRATE
MATCH (e1:Entity)-[r:RELATES_TO]->(e2:Entity)
WHERE r.canonical_source_id IS NULL
SET r.canonical_source_id = e1.canonical_id,
    r.canonical_target_id = e2.canonical_id
RETURN count(r);

// Phase 3: CONTRACT
MATCH (e:Entity)
WHERE e.legacy_id IS NOT NULL
REMOVE e.legacy_id
RETURN count(e);

// Rollback (contract): restore legacy ids from the canonical ones
MATCH (e:Entity) WHERE e.legacy_id IS NULL SET e.legacy_id = 'L' + substring(e.id, 7);

// Rollback (migrate): remove the canonical ids from relationships
MATCH ()-[r:RELATES_TO]->() REMOVE r.canonical_source_id, r.canonical_target_id;

// Rollback (expand): drop the property and its index
MATCH (e:Entity) REMOVE e.canonical_id;
DROP INDEX entity_canonical_id IF EXISTS;

// Validation:
// check expand.index_online (post): cypher:SHOW INDEXES YIELD name, state WHERE name = 'entity_canonical_id' RETURN count(*) AS count; expect: {"count": 1}
// check expand.all_have_canonical_id (post): cypher:MATCH (e:Entity) WHERE e.canonical_id IS NULL RETURN count(e) AS count; expect: {"count": 0}
