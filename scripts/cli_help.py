"""Help that fits a screen: long choice lists behind a metavar and a `--list_...` option.

Standard library only (scripts/algoperf_checks.py uses it before anything is installed).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping


class _ListChoices(argparse.Action):
    """Prints `name  description` per entry and exits, like `--help` (status 0)."""

    def __init__(self, option_strings, dest, entries: Callable[[], Mapping[str, str]], **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.entries = entries

    def __call__(self, parser, namespace, values, option_string=None):
        entries = self.entries()
        width = max(map(len, entries), default=0)
        parser.exit(0, "".join(f"{name:<{width}}  {text}\n" for name, text in entries.items()))


def add_choice_list(
    parser: argparse.ArgumentParser,
    flag: str,
    metavar: str,
    entries: Callable[[], Mapping[str, str]],
    **kwargs,
) -> None:
    """`flag NAME [NAME ...]` accepting the keys of `entries()`, and `--list_<dest>` to print
    them with their descriptions; the usage line shows only the metavar."""
    names = list(entries())
    dest = flag.lstrip("-")
    help_text = kwargs.pop("help", "")
    parser.add_argument(
        flag,
        nargs="+",
        choices=names,
        metavar=metavar,
        help=f"{help_text}{'; ' if help_text else ''}--list_{dest} names them",
        **kwargs,
    )
    parser.add_argument(
        f"--list_{dest}",
        action=_ListChoices,
        entries=entries,
        help=f"list the {dest} and exit",
    )
