"""The engines: what the assets and ops ask of the lakehouse (ingest days, build marts, compact, rewrite
manifests, expire, remove orphans), as one small interface (``base.Engine``) with an implementation per
engine. ``local.py`` is PyIceberg + DuckDB on this machine; a Spark engine is a sibling of it, chosen
by a setting, so no asset or op branches on the engine.
"""
