"""The marts: DuckDB SQL over a pinned snapshot of music.plays, stored back as Iceberg tables in music_marts."""
