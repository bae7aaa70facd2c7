"""``sonik sql``: one read-only SELECT in DuckDB over the lakehouse, now or as it was."""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from typing import TYPE_CHECKING

from sonik_pipeline.cli.common import UsageError, add_format_option, catalog_from_settings, lakehouse_duckdb, print_rows

if TYPE_CHECKING:
    import duckdb


def run_readonly_sql(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple]]:
    """Run one SELECT: `sonik sql` reads, it never writes (no COPY, CREATE, INSERT, ATTACH...)."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise UsageError("sonik sql is read-only: give exactly one SELECT (or WITH ... SELECT) statement")
    try:
        result = con.execute(sql)
        return [d[0] for d in result.description], result.fetchall()
    except duckdb.CatalogException as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}{_missing_table_hint(str(exc))}") from None
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}") from None


_MISSING_TABLE = re.compile(r'Table with name "?([^"\s]+)"? does not exist')


def _missing_table_hint(message: str) -> str:
    """For a table DuckDB does not know: the lakehouse's name for it (tables are named with their namespace),
    the closest names to a misspelt one, or else every table's name."""
    match = _MISSING_TABLE.search(message)
    if not match:
        return ""
    from sonik_pipeline.lakehouse.tables.definitions import CODE_TABLES

    wanted = match.group(1).lower().rsplit(".", 1)[-1]
    names = [table.identifier for table in CODE_TABLES]
    by_short = {name.rsplit(".", 1)[-1]: name for name in names}
    if wanted in by_short:
        return f"; the lakehouse's table is {by_short[wanted]} (tables are named with their namespace)"
    close = [by_short[short] for short in difflib.get_close_matches(wanted, by_short, n=3, cutoff=0.6)]
    if close:
        return f"; did you mean {' or '.join(close)}?"
    return f"; the lakehouse's tables are {', '.join(names)}"


# What looks at the catalog rather than at named tables (SHOW TABLES, information_schema.tables,
# duckdb_views(), query_table('music.plays')): such a query sees every table's view.
_CATALOG_SCHEMAS = ("information_schema", "pg_catalog")
_CATALOG_FUNCTIONS = ("query", "query_table")
_WORD = re.compile(r"[a-z_][a-z0-9_]*")


def _tables_read(sql: str, con: duckdb.DuckDBPyConnection | None = None) -> set[tuple[str, str]] | None:
    """The (schema, table) names a query reads, lower case, schema "" where not written; None for "every table".

    From DuckDB's parse tree (``json_serialize_sql``), never bound: binding would need the tables (and
    ``get_table_names`` binds, so a ``JOIN ... USING`` of tables it does not have fails). A CTE's name
    reads as a table too, which only costs a view. Where DuckDB cannot serialize the statement (a PIVOT
    statement inside a SELECT), every word of the query as a table name of any schema (``_named_in``);
    none for a query DuckDB cannot parse. None for a query of the catalog itself (``SHOW TABLES``,
    ``information_schema``). ``con``: the command's connection, if it has one, rather than a database of its own.
    """
    import duckdb

    try:
        if con is None:
            with duckdb.connect() as own:
                [text] = own.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
        else:
            [text] = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    except duckdb.Error:
        return _named_in(sql)
    tree = json.loads(text)
    if tree.get("error") and tree.get("error_type") == "parser":
        return set()  # it cannot run: DuckDB says why, and no table needs a view for that
    if tree.get("error"):
        return _named_in(sql)
    found: set[tuple[str, str]] = set()
    nodes = [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            if kind == "SHOW_REF" and not node.get("query"):  # SHOW TABLES; DESCRIBE/SUMMARIZE x carry x's query
                return None
            if kind == "TABLE_FUNCTION":
                function = str((node.get("function") or {}).get("function_name", "")).lower()
                if function in _CATALOG_FUNCTIONS or function.startswith(("duckdb_", "pragma_")):
                    return None
            if kind == "BASE_TABLE" and "table_name" in node:
                schema = (node.get("schema_name") or "").lower()
                if schema in _CATALOG_SCHEMAS:
                    return None
                found.add((schema, node["table_name"].lower()))
            nodes.extend(node.values())
        elif isinstance(node, list):
            nodes.extend(node)
    return found


def _named_in(sql: str) -> set[tuple[str, str]] | None:
    """Every word of ``sql`` as a table of any schema: a superset of the tables it reads (a table is read by
    its name), so only the lakehouse tables it names get a view; None if it may read the catalog."""
    words = set(_WORD.findall(sql.lower()))
    if words & {"show", "describe", *_CATALOG_SCHEMAS, *_CATALOG_FUNCTIONS} or any(
        word.startswith(("duckdb_", "pragma_")) for word in words
    ):
        return None
    return {("", word) for word in words}


def cmd_sql(args: argparse.Namespace) -> None:
    from sonik_pipeline.lakehouse.reads import timetravel
    from sonik_pipeline.lakehouse.tables.catalog import TableUnreadable

    catalog = catalog_from_settings()
    con = lakehouse_duckdb(catalog)
    as_of = timetravel.parse_time(args.as_of) if args.as_of else None
    reads = _tables_read(args.query, con)
    views = timetravel.create_views(con, catalog, as_of=as_of, snapshot_id=args.snapshot, reads=reads)
    if views.unreadable and reads is not None:  # the query reads them: no answer without them
        raise TableUnreadable("\n".join(views.unreadable.values()))
    for problem in views.unreadable.values():  # which tables the query reads is unknown: maybe not these
        print(f"sonik: warning: {problem}", file=sys.stderr)
    for found in views.inexact:  # only the tables this query reads: the others do not change its answer
        if found.snapshot is None:  # its history then was expired: nothing to read, so no answer
            raise UsageError(found.reason)
        if args.strict:
            raise UsageError(f"{found.reason} (--strict: not reading {found.fallback or 'it'} instead)")
        print(f"sonik: warning: {found.warning}", file=sys.stderr)
    if views.holder is not None and views.holder not in views.pinned:
        print(
            f"sonik: warning: snapshot {args.snapshot} is {views.holder}'s, which the query does not read "
            "(it reads the tables it names as they are now)",
            file=sys.stderr,
        )
    if args.as_of or args.snapshot:  # only the tables the query reads: the others do not change its answer
        pins = ", ".join(f"{t}@{s}" for t, s in views.pinned.items()) or "no lakehouse table"
        print(f"-- reading {pins}", file=sys.stderr)
    columns, rows = run_readonly_sql(con, args.query)
    print_rows(columns, rows, args.format)


def register(sub: argparse._SubParsersAction) -> None:
    sql = sub.add_parser("sql", help="run one read-only SELECT in DuckDB over views of the lakehouse tables it reads")
    add_format_option(sql)
    sql.add_argument("query", help='e.g. "SELECT artist, count(*) FROM music.plays GROUP BY 1 ORDER BY 2 DESC"')
    when = sql.add_mutually_exclusive_group()
    when.add_argument("--as-of", help="read every table as it was at this time (ISO-8601, UTC by default)")
    when.add_argument("--snapshot", type=int, help="read the table holding this snapshot id at that snapshot")
    sql.add_argument(
        "--strict",
        action="store_true",
        help="with --as-of: refuse, rather than warn, when a table's snapshot current then was expired",
    )
    sql.set_defaults(func=cmd_sql)
