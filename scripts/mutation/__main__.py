"""`python -m scripts.mutation [run|report] [MODULE ...]`: mutation testing of the core.

run: stages each core module (default: all) in build/mutation/<module>/, runs
`mutmut run` there, and writes its results to scripts/mutation/summaries/<module>.json.
collect: writes the summary of a run already done there (e.g. a long one started by hand
in the background: `cd build/mutation/reset && mutmut run --max-children 1`), with the
run's `--seconds`.
report: writes docs/mutation.md from those summaries and scripts/mutation/equivalent.toml.
Without a command, both (`make mutation`).
"""

from __future__ import annotations

import argparse
import sys

from scripts.mutation import report, results, stage


def build_parser() -> argparse.ArgumentParser:
    """The command line: a command and the core modules it acts on."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.mutation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command", nargs="?", choices=["run", "collect", "report", "all"], default="all"
    )
    parser.add_argument(
        "modules",
        nargs="*",
        choices=[[], *stage.BY_NAME],
        default=[],
        metavar="MODULE",
        help=f"{', '.join(stage.BY_NAME)} (default: all)",
    )
    parser.add_argument("--seconds", type=float, help="collect: how long the run took")
    parser.add_argument(
        "--note",
        help="collect: how the run was made when not by one `mutmut run` (e.g. survivors "
        "re-run by name after tests were added); the report prints it",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the asked command on the asked modules; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    modules = [stage.BY_NAME[name] for name in args.modules] or list(stage.CORE)
    if args.command in ("run", "all"):
        for module in modules:
            summary = results.run(module)
            print(results.describe(summary), flush=True)
    if args.command == "collect":
        if args.seconds is None:
            parser.error("collect needs --seconds (how long the run took)")
        for module in modules:
            summary = results.collect(module, args.seconds, args.note)
            print(results.describe(summary), flush=True)
    if args.command in ("report", "all"):
        path = report.write()
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
