"""DuckDB as the lakehouse uses it: safe SQL text, its extensions loaded offline, and Parquet scans of planned files."""
