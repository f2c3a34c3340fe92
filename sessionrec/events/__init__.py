"""Exposure and interaction events: schemas, non-blocking sinks (Redis Streams, Kafka), ingest to a click log."""
