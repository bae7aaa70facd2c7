"""The ``sonik`` command: small helpers for people outside the Dagster UI, one module per group of commands."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from sonik_pipeline.cli import audit, days, export, rejects, sql, tables, user
from sonik_pipeline.cli.common import SonikParser, user_errors

# In the order `sonik --help` lists them.
COMMAND_GROUPS = (days, tables, sql, rejects, audit, export, user)


def build_parser() -> SonikParser:
    parser = SonikParser(prog="sonik", description="Sonik lakehouse helpers.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
