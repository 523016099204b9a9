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


# --- the Dagster side ---------------------------------------------------------------------------
#
# The packages built on the engine have a floor plan too. The base is what every other package
# may import; the top composes it all and nothing imports it back:
#
#    0  orchestration.{resources, jobs, keys, failures}   the base: the one resource, the jobs,
#                                                          every asset key, the errors' mapping
#    1  quality     suites, asset checks, record validation
#    2  sensors     offset and subscription sensors
#    3  assets      the asset factories
#    4  examples    product-specific code (the derived partner_engagement product)
#    5  orchestration.{definitions, schedules, ingest, services, cli, demo, defs}, flowsuite   the top
#
# `flowsuite land` (orchestration/cli) runs the ingest job through orchestration.ingest, never
# through the demo: only `flowsuite demo` (cli/demo.py) imports orchestration.demo.

DAGSTER_PACKAGES = ("orchestration", "assets", "sensors", "quality", "examples", "flowsuite")
DAGSTER_LAYERS = {
    "orchestration.resources": 0,
    "orchestration.jobs": 0,
    "orchestration.keys": 0,
    "orchestration.failures": 0,
    "quality": 1,
    "sensors": 2,
    "assets": 3,
    "examples": 4,
    "orchestration": 5,  # the package itself (its __init__)
    "orchestration.definitions": 5,
    "orchestration.schedules": 5,
    "orchestration.ingest": 5,
    "orchestration.services": 5,
    "orchestration.cli": 5,
    "orchestration.demo": 5,
    "orchestration.defs": 5,  # the components' defs folder, where it exists
    "flowsuite": 5,  # the Dagster components (flowsuite.DataProduct: a product's definitions), where it exists
}


def _dagster_unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "orchestration" and len(parts) > 1 else parts[0]


def _dagster_modules() -> dict[str, Path]:
    return {_module_name(p): p for package in DAGSTER_PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


DAGSTER_MODULES = _dagster_modules()


def _dagster_edges() -> dict[str, set[tuple[str, int]]]:
    """Module → (Dagster-side module it imports, line), nested imports included."""
    edges: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for name, path in DAGSTER_MODULES.items():
        for module, names, line in _imports(name, path):
            if module.split(".")[0] not in DAGSTER_PACKAGES:
                continue
            targets = {f"{module}.{n}" for n in names if f"{module}.{n}" in DAGSTER_MODULES}
            if len(targets) < len(names) or not names:
                targets.add(module)
            edges[name] |= {(t, line) for t in targets if t != name}
    return edges


def test_every_dagster_module_belongs_to_a_layer():
    assert len(DAGSTER_MODULES) > 30  # the walk saw the packages
    assert "orchestration.resources" in {t for t, _ in _dagster_edges()["assets.hourly"]}
    missing = sorted({_dagster_unit(m) for m in DAGSTER_MODULES} - set(DAGSTER_LAYERS))
    assert not missing, f"add these to DAGSTER_LAYERS (and README's Layout): {missing}"


def test_dagster_packages_import_only_their_own_layer_or_below():
    wrong = [
        f"{DAGSTER_MODULES[module].relative_to(ROOT)}:{line}: {module} (layer {DAGSTER_LAYERS[_dagster_unit(module)]}) "
        f"imports {target} (layer {DAGSTER_LAYERS[_dagster_unit(target)]})"
        for module, targets in sorted(_dagster_edges().items())
        for target, line in sorted(targets)
        if DAGSTER_LAYERS.get(_dagster_unit(target), -1) > DAGSTER_LAYERS.get(_dagster_unit(module), -1)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_circle_between_dagster_units():
    units: dict[str, set[str]] = defaultdict(set)
    for module, targets in _dagster_edges().items():
        units[_dagster_unit(module)] |= {_dagster_unit(t) for t, _ in targets if _dagster_unit(t) != _dagster_unit(module)}
    circle = _cycle(units)
    assert circle is None, "package circle: " + " → ".join(circle)


def test_the_base_imports_nothing_dagster_side_above_it_and_no_dagster_private_api():
    base = [m for m in DAGSTER_MODULES if DAGSTER_LAYERS[_dagster_unit(m)] == 0]
    assert {_dagster_unit(m) for m in base} == {"orchestration.resources", "orchestration.jobs",
                                                   "orchestration.keys", "orchestration.failures"}
    private = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for name, path in DAGSTER_MODULES.items()
        for module, _, line in _imports(name, path)
        if module.startswith("dagster._")
    ]
    assert not private, "\n".join(private)


def test_only_the_demo_command_imports_the_demo():
    wrong = [
        f"{DAGSTER_MODULES[module].relative_to(ROOT)}:{line}: {module} imports {target}"
        for module, targets in sorted(_dagster_edges().items())
        for target, line in sorted(targets)
        if _dagster_unit(target) == "orchestration.demo" and _dagster_unit(module) != "orchestration.demo"
        and module != "orchestration.cli.demo"
    ]
    assert not wrong, "\n".join(wrong)


def test_asset_keys_are_built_in_the_keys_module_only():
    """`dg.AssetKey([...])` spelled by hand outside orchestration/keys.py is a second spelling."""
    wrong = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for name, path in DAGSTER_MODULES.items() if name != "orchestration.keys"
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "AssetKey"
        and node.args and isinstance(node.args[0], ast.List | ast.Tuple)
    ]
    assert not wrong, "\n".join(wrong)
