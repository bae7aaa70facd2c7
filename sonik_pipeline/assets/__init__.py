"""Thin Dagster wrappers over the lakehouse: orchestration and metadata, no table logic."""
