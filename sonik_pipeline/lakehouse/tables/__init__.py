"""The tables themselves: the catalog, every table as code, migrations, and the one guarded way to write or delete."""
