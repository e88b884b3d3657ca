"""One import mechanism: the product's modules import each other relatively; everything
else imports them as the installed package `cyclic_soft_reset`; submission.py alone has a
fallback for AlgoPerf's runner, which loads it by its path as the top-level module
`submission` (pyproject.toml explains it above [tool.setuptools]).

That this route trains, with the editable install blocked, is in tests/test_package.py
(`test_packaged_submission_trains_bit_for_bit_like_the_project_one`, its "project" run);
that the install claims no other name, in tests/test_install.py.
"""

import ast
import graphlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from cyclic_soft_reset import submission
from scripts import package_submission

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cyclic_soft_reset"
# The product's own top-level names: what the package holds and the packager copies.
OWN = frozenset(
    [m.removesuffix(".py") for m in package_submission.MODULES] + list(package_submission.PACKAGES)
)
PRODUCT_FILES = sorted(
    [ROOT / m for m in package_submission.MODULES]
    + [p for package in package_submission.PACKAGES for p in (ROOT / package).rglob("*.py")]
)
TOOL_FILES = sorted(
    p
    for folder in ("scripts", "tests")
    for p in (ROOT / folder).rglob("*.py")
    if "__pycache__" not in p.parts and p != Path(__file__).resolve()  # Its examples.
)
# The deliberate loads of submission.py by its path (the fallback's route) in tools run
# where the package is not installed (AlgoPerf's venv): file -> the name it imports.
FLAT_ROUTES = {
    "tests/conftest.py": "submission",
    "scripts/algoperf_checks.py": "submission",  # _RESETS, run in AlgoPerf's venv.
}


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, absolute module name) of each import statement (level 0) in `tree`, of each
    statement in its string constants (code run in subprocesses: `python -c`), and of each
    `import_module("...")` call with a constant name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for statement in re.split(r"[\n;]", node.value):
                statement = statement.strip()
                if statement.startswith(("import ", "from ")):
                    try:
                        inner = ast.parse(statement)
                    except SyntaxError:  # Prose, or a statement cut by a line break.
                        continue
                    found += [(node.lineno, name) for _, name in _imported(inner)]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_the_scan_sees_each_form_of_import():
    code = '''
import hyperparameters as hp
from schedules.plan import CyclePlan
from . import reset
SCRIPT = """
import json, sys; import submission
from records import resets_in
"""
importlib.import_module("controller")
'''
    names = sorted(name for _, name in _imported(ast.parse(code)))
    assert names == sorted(
        ["hyperparameters", "schedules.plan", "json", "sys", "submission", "records", "controller"]
    )


def test_only_submission_mentions___package__():
    mentions = []
    for path in PRODUCT_FILES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = getattr(node, "id", None) or getattr(node, "attr", None)
            if name == "__package__":
                mentions.append(str(path.relative_to(ROOT)))
    assert set(mentions) == {"submission.py"}


def test_the_product_imports_its_own_modules_relatively_only():
    absolute = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in PRODUCT_FILES
        for line, name in _imported(ast.parse(path.read_text(encoding="utf-8")))
        if name.split(".")[0] in OWN | {PACKAGE}
    ]
    assert absolute == []


def test_tests_and_scripts_import_the_product_by_its_installed_name():
    bare = []
    for path in TOOL_FILES:
        relative = str(path.relative_to(ROOT))
        for line, name in _imported(ast.parse(path.read_text(encoding="utf-8"))):
            if name.split(".")[0] in OWN and FLAT_ROUTES.get(relative) != name:
                bare.append(f"{relative}:{line}: {name}")
    assert bare == []  # `from cyclic_soft_reset import x`, not `import x`.


def _load_by_path(name: str) -> None:
    """Executes the checkout's submission.py as the top-level module `name` (its
    __package__ empty, as under AlgoPerf's runner), then forgets it."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "submission.py")
    sys.modules[name] = module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]


def test_loading_submission_by_path_beside_another_checkout_says_which_folders(
    tmp_path, monkeypatch
):
    other = types.ModuleType(PACKAGE)
    other.__path__ = [str(tmp_path / "other_checkout")]
    monkeypatch.setitem(sys.modules, PACKAGE, other)
    with pytest.raises(ImportError) as error:
        _load_by_path("submission_by_path")
    message = str(error.value)
    assert str(tmp_path / "other_checkout") in message and str(ROOT) in message
    assert f"pip install -e {ROOT}" in message
    assert not hasattr(other, "submission") and sys.modules[PACKAGE] is other


def test_loading_submission_by_path_after_the_package_keeps_one_submission_module():
    before = dict(sys.modules)
    with pytest.raises(ImportError, match=rf"already imported it as {PACKAGE}\.submission"):
        _load_by_path("submission_by_path")
    assert sys.modules[f"{PACKAGE}.submission"] is submission
    assert dict(sys.modules).items() >= before.items()


# The tools from a checkout where the project is not installed (AlgoPerf's venv, an
# offline GPU machine): the editable install's finder is taken away before anything is
# imported, and that it no longer answers is checked, so the test cannot pass on it.
_TOOLS_UNINSTALLED = """
import importlib.util, json, sys
def installed(finder):
    return "__editable__" in getattr(finder, "__module__", "")
sys.meta_path[:] = [f for f in sys.meta_path if not installed(f)]
sys.path_hooks[:] = [h for h in sys.path_hooks if not installed(h)]
sys.path_importer_cache.clear()
hidden = importlib.util.find_spec("cyclic_soft_reset") is None
import scripts.run
from cyclic_soft_reset import hyperparameters
package = sys.modules["cyclic_soft_reset"]
print(json.dumps({
    "hidden": hidden,
    "path": list(package.__path__),
    "files": sorted(m.__file__ for n, m in sys.modules.items()
                    if n.split(".")[0] in ("cyclic_soft_reset", "scripts")
                    and getattr(m, "__file__", None)),
    "flat": sorted(n for n in sys.modules if n in %r),
}))
"""


@pytest.mark.slow
def test_the_tools_run_from_a_checkout_where_the_project_is_not_installed():
    """scripts/__init__.py makes the checkout the package cyclic_soft_reset when no install
    answers for that name: `python -m scripts.run ...` works in AlgoPerf's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    proc = subprocess.run(
        [sys.executable, "-c", _TOOLS_UNINSTALLED % sorted(OWN)],
        cwd=ROOT,
        env=dict(env, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.splitlines()[-1])
    assert found["hidden"]  # The install did not answer: the fallback did.
    assert found["path"] == [str(ROOT)]
    assert len(found["files"]) >= 10
    assert all(Path(f).is_relative_to(ROOT) for f in found["files"])
    assert found["flat"] == []  # Nothing of the product under a top-level name.


def test_no_source_file_a_maintainer_has_to_scroll():
    """The house's sizes: submission.py is wiring (300 lines at most), and no source file
    outside tests/ runs over 600 lines."""
    assert len((ROOT / "submission.py").read_text().splitlines()) <= 300
    sources = PRODUCT_FILES + [p for p in TOOL_FILES if p.parts[len(ROOT.parts)] == "scripts"]
    long = {
        str(p.relative_to(ROOT)): n
        for p in sources
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600
    }
    assert not long


def _module_name(root: Path, path: Path) -> str:
    """The name a file is imported by: scripts.x.y for the tools, cyclic_soft_reset.x.y
    for the product."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts if parts[0] == "scripts" else [PACKAGE, *parts])


def _import_graph(root: Path, files: list[Path]) -> dict[str, set[str]]:
    """module -> the modules of `files` it imports, at any depth of its code (an import
    hidden in a function still closes a circle). `from a import b` counts a.b when b is a
    module, else a."""
    names = {_module_name(root, path): path for path in files}

    def known(name: str) -> str:  # The longest prefix that is one of `files`.
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0]
                    base = f"{anchor}.{base}".rstrip(".")
                targets += [f"{base}.{alias.name}" for alias in node.names]
        graph[name] = {m for m in map(known, targets) if m and m != name}
    return graph


def test_the_import_graph_sees_a_circle(tmp_path):
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "__init__.py").write_text("")
    (tmp_path / "schedules" / "plan.py").write_text("def f():\n    from . import shapes\n")
    (tmp_path / "schedules" / "shapes.py").write_text("from ..schedules.plan import f\n")
    graph = _import_graph(tmp_path, sorted(tmp_path.rglob("*.py")))
    assert graph[f"{PACKAGE}.schedules.plan"] == {f"{PACKAGE}.schedules.shapes"}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()


def test_no_import_circles():
    """The product and the tools import in one direction (issue 19 found two circles)."""
    scripts = [p for p in TOOL_FILES if p.parts[len(ROOT.parts)] == "scripts"]
    graph = _import_graph(ROOT, PRODUCT_FILES + scripts)
    assert f"{PACKAGE}.steps" in graph[f"{PACKAGE}.submission"]  # Relative imports seen.
    assert f"{PACKAGE}.algoperf_compat" in graph["scripts.local.runner"]  # The installed name.
    graphlib.TopologicalSorter(graph).prepare()  # CycleError names the circle.
