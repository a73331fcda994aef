"""Dagster wiring only: partitions, resources, IO manager, assets."""
