"""Dagster ops: thin wrappers that run the maintenance and rollback logic of ``maintenance/`` and ``lakehouse/``.

``maintenance.py`` holds the table-maintenance ops and their config, ``rollback.py`` the rollback op;
``jobs.py`` composes them into jobs.
"""
