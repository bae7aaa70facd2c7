"""Reading committed tables at a pinned snapshot: days of plays, quality figures, time travel and rollback."""
