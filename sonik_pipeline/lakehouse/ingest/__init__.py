"""A day of raw events to committed rows: validation, de-duplication, quarantine, one atomic replace of the days."""
