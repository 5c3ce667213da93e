"""Feature store package: canonical tables, synthetic generator, ingestion and the Feast repository."""
