"""sonik_pipeline: Sonik's play-event lakehouse as a Dagster code location."""

from sonik_pipeline.definitions import defs

__all__ = ["defs"]
