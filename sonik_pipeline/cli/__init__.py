"""The ``sonik`` command: small helpers for people outside the Dagster UI, one module per group of commands."""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sonik_pipeline.cli import audit, days, export, rejects, sql, tables, user
from sonik_pipeline.cli.common import SonikParser, user_errors

# In the order `sonik --help` lists them.
COMMAND_GROUPS = (days, tables, sql, rejects, audit, export, user)
# A command imports PyIceberg, SQLAlchemy, PyArrow (with pandas) and DuckDB: some 150,000 objects that live
# until exit. At CPython's default thresholds (700, 10, 10) the imports alone set off hundreds of collections
# that free next to nothing. Rarer collections still collect (mypy's own command runs with these).
COMMAND_GC_THRESHOLD = (200_000, 30, 30)


def build_parser() -> SonikParser:
    parser = SonikParser(prog="sonik", description="Sonik lakehouse helpers.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


@contextmanager
def few_collections() -> Iterator[None]:
    """Collect garbage rarely while a command runs, and skip the last collection when the process exits.

    At exit, ``gc.freeze`` spares the interpreter's final collection, which walks every object only to free
    them all anyway (0.3 s of ``sonik tables``, benchmarks/cli.py); it runs after the command has written its
    output and closed its files. The thresholds are restored after the command (tests call ``main`` in their
    own process).
    """
    before = gc.get_threshold()
    gc.set_threshold(*COMMAND_GC_THRESHOLD)
    atexit.unregister(gc.freeze)  # registered once, however many commands one process runs
    atexit.register(gc.freeze)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with few_collections():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        from sonik_pipeline.settings import Settings  # not at the top: `sonik --help` needs none of it

        Settings.from_env()  # every SONIK_* value checked before any command runs
        code = args.func(args)  # a command that found something wrong returns 1
    except BrokenPipeError:
        # The reader stopped early (`sonik ... | head`): not an error. Python's own advice: point stdout at
        # devnull, so the interpreter's final flush does not raise again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if isinstance(exc, user_errors()):
            for line in str(exc).splitlines():
                print(f"sonik: error: {line}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(
            f"sonik: unexpected {type(exc).__name__} (traceback above): "
            "unless your setup explains it, please report it as a bug with the traceback",
            file=sys.stderr,
        )
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
