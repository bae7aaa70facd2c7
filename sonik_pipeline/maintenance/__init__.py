"""Table maintenance on PyIceberg and PyArrow: what Iceberg's Spark procedures give Spark users.

``compaction.py`` (rewrite_data_files), ``expiry.py`` (expire_snapshots, deleting what becomes
unreachable) and ``orphans.py`` (remove_orphan_files). No Dagster here: jobs wrap these functions.
"""
