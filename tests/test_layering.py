"""The engine's import layering, read from the source (ast), lazy imports inside functions included.

connectors/ is a stack of layers; a module imports only from its own layer or the ones below:

    0  spec, faults, leases, settings, errors   (top-level modules)
    1  formats
    2  kafka, lake, metastore, tables (open table formats over the lake and the metastore)
    3  flows, warehouse, gateway, contracts (ODCS data contracts)
    4  sources
    5  engine (the front door the faces wrap: every store, the specs, a run's context)

Within a layer imports may cross (lake.readers uses the metastore) as long as no circle forms.
The test fails on: a circle between modules or between these units; an import from a higher
layer; `from x import _private` from another module; connectors/ importing Dagster, Airflow or
the packages built on it (orchestration, assets, sensors, quality, examples).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "connectors"

LAYERS = {
    "connectors.spec": 0,
    "connectors.faults": 0,
    "connectors.leases": 0,
    "connectors.settings": 0,
    "connectors.errors": 0,
    "connectors.formats": 1,
    "connectors.kafka": 2,
    "connectors.lake": 2,
    "connectors.metastore": 2,
    "connectors.tables": 2,
    "connectors.flows": 3,
    "connectors.warehouse": 3,
    "connectors.gateway": 3,
    "connectors.contracts": 3,
    "connectors.sources": 4,
    "connectors.engine": 5,
}
FORBIDDEN = ("dagster", "airflow", "orchestration", "assets", "sensors", "quality", "examples")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the file, nested ones too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            if module == "__future__":
                continue
            found.append((module, [a.name for a in node.names], node.lineno))
    return found


def _edges() -> dict[str, set[str]]:
    """Module → the engine modules it imports (`from pkg import mod` counts as importing pkg.mod)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for module, names, _ in _imports(name, path):
            if not module.startswith("connectors"):
                continue
            targets = {f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES}
            if len(targets) < len(names) or not names:
                targets.add(module)  # names defined in (or re-exported by) the module itself
            edges[name] |= {t for t in targets if t != name}
    return edges


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of `graph` as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_engine_module_belongs_to_a_layer():
    missing = sorted({_unit(m) for m in MODULES if m != "connectors"} - set(LAYERS))
    assert not missing, f"add these to LAYERS (and README's Layout): {missing}"


def test_no_circle_between_engine_modules():
    circle = _cycle(_edges())
    assert circle is None, "import circle: " + " → ".join(circle)


def test_no_circle_between_engine_subpackages():
    units: dict[str, set[str]] = defaultdict(set)
    for module, targets in _edges().items():
        units[_unit(module)] |= {_unit(t) for t in targets if _unit(t) != _unit(module)}
    circle = _cycle(units)
    assert circle is None, "package circle: " + " → ".join(circle)


def test_subpackages_import_only_their_own_layer_or_below():
    wrong = [
        f"{module} (layer {LAYERS[_unit(module)]}) imports {target} (layer {LAYERS[_unit(target)]})"
        for module, targets in sorted(_edges().items())
        for target in sorted(targets)
        if _unit(module) in LAYERS and _unit(target) in LAYERS and LAYERS[_unit(target)] > LAYERS[_unit(module)]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_private_name_is_imported_from_another_module():
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: from {module} import {n}"
        for name, path in MODULES.items()
        for module, names, line in _imports(name, path)
        if module.startswith("connectors") and module != name
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_engine_imports_no_orchestration():
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for name, path in MODULES.items()
        for module, _, line in _imports(name, path)
        if module.split(".")[0] in FORBIDDEN
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_circle_and_a_private_import(tmp_path):
    """The walk itself: a planted circle and a planted private import are found."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    planted = tmp_path / "m.py"
    planted.write_text("def f():\n    from connectors.lake.store import _tmp_name\n")
    assert _imports("connectors.m", planted) == [("connectors.lake.store", ["_tmp_name"], 2)]


def test_no_package_exports_a_name_that_shadows_its_own_submodule():
    """`connectors.warehouse.sync` must be one thing: a package re-exporting a function named like
    one of its modules makes `import connectors.warehouse.sync` return the function."""
    wrong = []
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        submodules = {p.stem for p in path.parent.glob("*.py") if p.stem != "__init__"}
        submodules |= {p.parent.name for p in path.parent.glob("*/__init__.py")}
        exported = {a.asname or a.name for node in ast.parse(path.read_text()).body
                    if isinstance(node, ast.ImportFrom) for a in node.names}
        wrong += [f"{name}.{n}" for n in sorted(exported & submodules)]
    assert not wrong, wrong
