"""DuckDB as the lakehouse uses it: safe SQL text, its extensions loaded offline, and Parquet scans of planned files."""

# DuckDB's memory where no other limit is given (SONIK_DUCKDB_MEMORY_LIMIT's default, the CLI's): the marts
# of a 10M-event day fit; past it, DuckDB spills what it can to disk and fails on what it cannot. Here, not in
# extensions.py, so that settings read it without importing DuckDB (`sonik tables` never needs it).
DEFAULT_MEMORY_LIMIT = "2GB"
