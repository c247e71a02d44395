"""The package's shape: dependencies point one way, nothing reaches into another module's
private names, and the README's module map lists every module there is.

Imports are read from the source (module level and inside functions alike; `if
TYPE_CHECKING:` blocks aside, since they never run), so an import hidden in a function
cannot hide a cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import wanvae

PACKAGE = Path(wanvae.__file__).parent
README = PACKAGE.parent / "README.md"

# Lower layers never import higher ones; the groups of one layer never import each other.
# A group is the modules under any of its prefixes. The same table, with its reasons, is in
# docs/design.md.
LAYERS = (
    (("wanvae", "wanvae.config", "wanvae.checks", "wanvae.metrics"),),  # values and checks, no model
    (("wanvae.coding",),),  # how a clip runs: state, seams, tiles, the plan, streams, heap
    (("wanvae.model",),),  # the Wan VAEs' layers and networks, built on coding's contexts
    (("wanvae.io",),),  # files: weights, latents, videos, atomic writes, checked values
    (("wanvae.integrations",), ("wanvae.training",), ("wanvae.cache", "wanvae.data"), ("wanvae.testing",)),  # users of the library
    (("wanvae.commands", "wanvae.cli", "wanvae.__main__"),),  # the command line and its entry points
)


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = modules()


def group_of(module: str) -> tuple[int, str]:
    """(layer, group) of a module, by the longest prefix in LAYERS it falls under."""
    best, length = None, -1
    for rank, groups in enumerate(LAYERS):
        for group in groups:
            for prefix in group:
                if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                    best, length = (rank, group[0]), len(prefix)
    assert best is not None, f"{module} is in no layer of LAYERS: place it"
    return best


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported wanvae module, names taken from it, line) for every import that runs."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "wanvae":
                    found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "wanvae":
                for alias in node.names:
                    if f"{target}.{alias.name}" in MODULES:  # `from pkg import module`
                        found.append((f"{target}.{alias.name}", [], node.lineno))
                    else:
                        found.append((target, [alias.name], node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def test_every_module_sits_in_one_layer():
    for name in MODULES:
        group_of(name)


def test_dependencies_point_one_way():
    wrong = []
    for name, imports in GRAPH.items():
        rank, group = group_of(name)
        for target, _, line in imports:
            if target == "wanvae":  # the root holds only __version__ and the lazy API
                continue
            target_rank, target_group = group_of(target)
            if target_rank > rank or (target_rank == rank and target_group != group):
                wrong.append(f"{name}:{line} imports {target} ({target_group}, layer {target_rank} from layer {rank})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    edges = {name: {t for t, _, _ in imports if t in MODULES and t != "wanvae" and t != name} for name, imports in GRAPH.items()}
    # Tarjan's strongly connected components: a component of two or more modules is a cycle.
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in edges:
        if v not in index:
            connect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_takes_another_modules_private_names():
    taken = [
        f"{name}:{line} takes {target}.{n}"
        for name, imports in GRAPH.items()
        for target, names, line in imports
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert not taken, "\n".join(taken)


def test_nothing_outside_the_model_calls_its_private_methods():
    """`vae._x`, `self.vae._x`, `model._x`: the model's privates are its own business."""
    pattern = re.compile(r"\b(?:vae\w*|wan|model|twin|tiny_vae\w*)\._(?!hf_)[a-z]\w*")  # _hf_: accelerate's hooks
    model_file = MODULES["wanvae.model.vae"]
    paths = [p for p in MODULES.values() if p != model_file]
    paths += sorted((PACKAGE.parent / "tests").glob("*.py")) + sorted((PACKAGE.parent / "bench").glob("*.py"))
    paths = [p for p in paths if p.name != Path(__file__).name]
    calls = [f"{p.name}: {m.group(0)}" for p in paths for m in pattern.finditer(p.read_text())]
    assert not calls, "\n".join(calls)


def test_no_command_modules_at_the_top_level():
    assert not [p.name for p in PACKAGE.glob("*_cli.py")]


def test_readme_module_map_lists_every_module():
    text = README.read_text()
    start = text.index("## Module map")
    section = text[start : text.index("\n## ", start + 1)]
    listed = set(re.findall(r"`(wanvae(?:\.\w+)*)`", section))
    missing = sorted(set(MODULES) - listed)
    stale = sorted(m for m in listed - set(MODULES))
    assert not missing, f"modules missing from the README's module map: {missing}"
    assert not stale, f"the README's module map names modules that do not exist: {stale}"


@pytest.mark.parametrize("module", ["wanvae.commands.main", "wanvae.cli", "wanvae.io.values"])
def test_the_command_line_parses_without_torch(module):
    """Bad arguments cost nothing: the parser and its checks run before torch is imported."""
    import subprocess
    import sys

    code = f"import sys, {module}; import wanvae.commands.main as m; m.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
