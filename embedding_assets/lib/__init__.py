"""Pure logic and I/O clients. Nothing here imports Dagster."""
