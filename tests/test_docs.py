"""The README and the manual in docs/ say what works: every command they quote exists and
its options parse, every `make` target they name is in the Makefile, every relative link
resolves, and every command's `--help` fits a screen."""

import argparse
import contextlib
import importlib
import importlib.util
import io
import pkgutil
import re
import shlex
from pathlib import Path

import pytest

import scripts

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
SCREEN_LINES, SCREEN_COLUMNS = 50, 100

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")
PYTHON_M = re.compile(r"(?:^|\s|/)python3?(?:\.\d+)?\s+-m\s+(scripts(?:\.\w+)+)(.*)$", re.DOTALL)
MAKE = re.compile(r"(?:^|\s)make ([\w-]+)((?:\s+\w+=(?:'[^']*'|\"[^\"]*\"|\S+))*)")
MAKE_RECIPE = re.compile(r"^([\w-]+):.*\n(?:\t.*\n)*?\t.*-m (scripts[\w.]+) \$\(ARGS\)", re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
SHELL_STOP = {"|", "||", "&&", ";", ">", ">>", "2>&1", "&"}


def _snippets(text: str) -> list[str]:
    """The code a page quotes: each logical line of its fenced shell blocks (continuations
    joined), and each inline code span."""
    out = []
    for lang, body in FENCE.findall(text):
        if lang in ("", "bash", "sh", "console", "shell"):
            out += body.replace("\\\n", " ").splitlines()
    fenced = FENCE.sub("", text)
    out += [span.replace("\n", " ") for span in INLINE.findall(fenced)]
    return out


def _tokens(rest: str) -> list[str]:
    """The arguments after `-m module`, as a shell would split them, up to the first shell
    operator; `<placeholder>` becomes a word, `...` (more of the same) and `[ ]` (optional)
    are dropped, and what follows `--` belongs to another program."""
    rest = re.sub(r"<[^<>]*>", "PLACEHOLDER", rest)
    words = []
    for word in shlex.split(rest, comments=True):
        if word in SHELL_STOP or word.startswith(">"):
            break
        word = word.strip("[]").removesuffix("...")
        if word:
            words.append(word)
    return words[: words.index("--")] if "--" in words else words


def quoted_commands() -> list[tuple[str, str, list[str]]]:
    """(page, module, arguments) for every `python -m scripts....` the pages quote, and for
    every `make <target> ARGS=...` whose recipe runs a module with $(ARGS)."""
    recipes = dict(MAKE_RECIPE.findall((ROOT / "Makefile").read_text()))
    found = []
    for page in PAGES:
        for snippet in _snippets(page.read_text()):
            if match := PYTHON_M.search(snippet):
                found.append((page.name, match.group(1), _tokens(match.group(2))))
            for target, assignments in MAKE.findall(snippet):
                args = dict(a.split("=", 1) for a in shlex.split(assignments))
                if target in recipes and "ARGS" in args:
                    found.append((page.name, recipes[target], _tokens(args["ARGS"])))
    return found


def quoted_make_targets() -> list[tuple[str, str]]:
    return [
        (page.name, target)
        for page in PAGES
        for snippet in _snippets(page.read_text())
        for target, _ in MAKE.findall(snippet)
    ]


def command_modules() -> list[str]:
    """Every module under scripts/ that runs as a command (`if __name__ == "__main__"`)."""
    names = []
    for info in pkgutil.walk_packages(scripts.__path__, "scripts."):
        path = Path(importlib.util.find_spec(info.name).origin)
        if path.suffix == ".py" and '__name__ == "__main__"' in path.read_text():
            names.append(info.name)
    return names


def command_module(name: str):
    """The module `python -m name` runs: a package's `__main__`, else the module itself."""
    spec = importlib.util.find_spec(name)
    return importlib.import_module(f"{name}.__main__" if spec.submodule_search_locations else name)


def test_the_pages_quote_commands_at_all():
    modules = {module for _, module, _ in quoted_commands()}
    assert {"scripts.run", "scripts.compare", "scripts.experiments.score"} <= modules


@pytest.mark.parametrize(
    "page,module,args", quoted_commands(), ids=lambda v: v if isinstance(v, str) else None
)
def test_each_quoted_command_exists_and_its_options_parse(page, module, args, capsys):
    parser = command_module(module).build_parser()
    try:
        parser.parse_args(args)
    except SystemExit as stop:  # --help and --list_... exit 0; a bad option exits 2.
        err = capsys.readouterr().err
        assert stop.code == 0, f"{page}: python -m {module} {shlex.join(args)}\n{err}"


def test_each_quoted_make_target_is_in_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    missing = {(page, t) for page, t in quoted_make_targets() if t not in targets}
    assert not missing, f"make targets quoted but not in the Makefile: {sorted(missing)}"


def test_each_relative_link_resolves():
    broken = [
        (page.name, target)
        for page in PAGES
        for target in LINK.findall(page.read_text())
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert not broken, f"links to nothing: {broken}"


@pytest.mark.parametrize("module", command_modules())
def test_each_command_has_a_parser_whose_help_fits_a_screen(module, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(SCREEN_COLUMNS))
    parser = command_module(module).build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    texts = [parser.format_help()]
    for action in parser._actions:  # Each subcommand's help must fit too.
        if isinstance(action, argparse._SubParsersAction):
            texts += [sub.format_help() for sub in action.choices.values()]
    for text in texts:
        lines = text.splitlines()
        wide = [line for line in lines if len(line) > SCREEN_COLUMNS]
        assert len(lines) <= SCREEN_LINES, f"{module} --help: {len(lines)} lines"
        assert not wide, f"{module} --help: lines wider than {SCREEN_COLUMNS}: {wide}"


def test_the_checker_catches_a_bad_option_and_a_missing_module(tmp_path, monkeypatch):
    """Planted: a page quoting an option that does not exist, and a module that does not."""
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\npython -m scripts.run --no_such_option 3   # bad\n```\n"
        "Then `python -m scripts.no_such_module --x`.\n"
    )
    monkeypatch.setattr(f"{__name__}.PAGES", [page])
    (_, module, args), (_, missing, _) = quoted_commands()
    with pytest.raises(SystemExit) as stop, contextlib.redirect_stderr(io.StringIO()):
        importlib.import_module(module).build_parser().parse_args(args)
    assert stop.value.code == 2
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(missing)


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the manual lives in docs/"


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    unlinked = [p.name for p in (ROOT / "docs").glob("*.md") if f"(docs/{p.name})" not in readme]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
