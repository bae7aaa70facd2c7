"""sonik_pipeline: Sonik's play-event lakehouse as a Dagster code location (``sonik_pipeline.definitions``).

Nothing is imported here, so the ``sonik`` command and the lakehouse modules load without Dagster.
"""
