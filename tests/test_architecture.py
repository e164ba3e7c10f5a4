"""The layout shows the architecture: layers import only downwards, no cycles, modules import alone."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bdljax"

# Each layer may import itself and the layers listed; everything else in bdljax is above it.
ALLOWED = {
    "core": {"core"},
    "nn": {"core", "nn"},
    "methods": {"core", "nn", "methods"},
    "evaluate": {"core", "nn", "evaluate"},
    "data": {"core", "data"},
    "run": {"core", "nn", "methods", "evaluate", "run"},
    "recipes": {"core", "nn", "methods", "evaluate", "run", "recipes", "data"},
}
STANDARD_LIBRARY = set(sys.stdlib_module_names) | {"map", "filter", "list", "dict", "type", "input", "iter"}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def bdljax_imports(path: Path):
    """Every bdljax module ``path`` imports, at any depth of the file (function-level imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bdljax"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("bdljax"))
    known = {name for name, _ in modules()}
    return {name for name in names if name in known}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_layers_import_only_downwards():
    offending = []
    for module, path in modules():
        own = layer(module)
        if own not in ALLOWED or module.endswith("__init__"):
            continue
        for target in bdljax_imports(path):
            if layer(target) and layer(target) not in ALLOWED[own]:
                offending.append(f"{module} -> {target}")
    assert not offending, "imports against the layering:\n" + "\n".join(offending)


def test_no_import_cycles():
    graph = {module: {t for t in bdljax_imports(path) if t != module} for module, path in modules()}
    # Package __init__ files re-export their children: an edge into a package is an edge into what it imports.
    visiting, done, cycles = set(), set(), []

    def visit(node, trail):
        if node in done:
            return
        if node in visiting:
            cycles.append(trail[trail.index(node):] + [node])
            return
        visiting.add(node)
        for target in sorted(graph.get(node, ())):
            if not (target == "bdljax" or node.startswith(target + ".")):  # a module importing its own package
                visit(target, trail + [target])
        visiting.discard(node)
        done.add(node)

    for module in sorted(graph):
        visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_shadows_the_standard_library_or_a_builtin():
    shadowing = [module for module, _ in modules() if module.split(".")[-1] in STANDARD_LIBRARY]
    assert not shadowing, shadowing


IMPORT_ALONE = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"


def import_alone(*names):
    """Import ``names`` in a fresh interpreter (hard timeout), failing with its error output."""
    result = subprocess.run([sys.executable, "-c", IMPORT_ALONE, *names], capture_output=True, text=True, timeout=180,
                            env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, f"{names} do not import:\n{result.stderr[-2000:]}"


def test_each_layer_imports_in_a_fresh_interpreter():
    """The modules of each layer, bottom-up order reversed (a module that only imports after a sibling fails)."""
    names = [module for module, _ in modules()]
    for group in sorted({layer(n) for n in names}):
        import_alone(*reversed([n for n in names if layer(n) == group]))


@pytest.mark.slow
@pytest.mark.parametrize("name", [module for module, _ in modules()])
def test_every_module_imports_alone(name):
    import_alone(name)
