// Migration: Sample entities and relationships of the graph
// ID: 20251120_152000_data_seed_entities
// Version: 1.0.0
// Database: neo4j
// Author: platform-team@example.com
// Created: 2025-11-20
// Breaking: false
// Dependencies: []

// Phase 1: EXPAND
UNWIND range(1, 50) AS i
MERGE (e:Entity {id: 'entity-' + toString(i)})
SET e.legacy_id = 'L' + toString(i);

MATCH (a:Entity), (b:Entity)
WHERE toInteger(substring(a.id, 7)) + 1 = toInteger(substring(b.id, 7))
MERGE (a)-[:RELATES_TO]->(b);

// Rollback: remove the sample graph
MATCH (e:Entity) WHERE e.id STARTS WITH 'entity-' DETACH DELETE e;
