"""Dagster glue: thin assets, ops, sensors and resources around the engine and media code."""
