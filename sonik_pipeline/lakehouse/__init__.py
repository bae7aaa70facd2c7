"""The lakehouse, free of Dagster: its sub-packages in the order data flows.

``sources/`` yields raw days of play events (synthetic, or the app's landing files); ``ingest/``
validates, de-duplicates and quarantines them and replaces whole days in one commit; ``tables/``
holds the catalog, every table's definition and the one way a table is written; ``reads/`` reads
days and tables at pinned snapshots (quality figures, time travel); ``marts/`` aggregates days
with DuckDB and writes them back. ``duckdb_io/`` and the two modules at this level (``days``,
``arrow_memory``) are the ground every layer stands on.
"""
