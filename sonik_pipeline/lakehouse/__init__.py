"""The lakehouse itself: catalog, table definitions, event sources, validation and writes.

Nothing here imports Dagster, so the logic is testable with a plain catalog and table.
"""
