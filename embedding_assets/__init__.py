"""Precomputed document embeddings, kept current in a Redis feature store by Dagster assets."""
