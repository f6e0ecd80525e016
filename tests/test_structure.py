"""The house's shape, checked on every run: no import circles, connectors/ independent of pipeline/, modules and
functions small enough to read, and imports inside functions only for heavy optional libraries.

Static: the source is parsed (ast), nothing is imported. Run alone with ``pytest tests/test_structure.py``; the
failures name each offending module, function or import line.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Source folder → import name (pyproject.toml maps pipeline/ and connectors/ under mmindex).
PACKAGES = {"mmindex": "mmindex", "pipeline": "mmindex.pipeline", "connectors": "mmindex.connectors"}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
# Libraries slow to import or optional (extras): the only ones imported inside functions, so that `import mmindex`,
# `mmindex --help` and the torch-free query path stay light.
HEAVY = {"torch", "torchvision", "transformers", "sentence_transformers", "open_clip", "ray", "fastapi",
         "starlette", "uvicorn", "prometheus_client", "onnxruntime", "onnx", "onnxscript", "qdrant_edge",
         "qdrant_client", "httpx", "grpc", "tokenizers", "huggingface_hub", "safetensors", "multipart",
         "tqdm", "pydantic", "pyarrow", "sklearn"}
# scikit-learn (~1 s to import) only fits linear probes (pipeline/classify/probe.py).
# pyarrow is a core dependency, imported at the top of the modules that read Parquet; it is listed because it takes
# ~0.1 s to import, which `mmindex --help` and the fast query path skip.


def modules() -> dict[str, Path]:
    """Import name → file, for every module of mmindex."""
    found = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts])] = path
    return found


def imports(path: Path, module: str, known: set[str]) -> list[tuple[str, ast.AST, bool]]:
    """(imported module, node, inside a function) for each import of ``path``; names resolved to modules."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, child, inside) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - child.level + 1] + [base]).strip(".")
                for alias in child.names:
                    # `from pkg import mod` imports the module pkg.mod when there is one
                    candidate = f"{base}.{alias.name}"
                    found.append((candidate if candidate in known else base, child, inside))
            else:
                visit(child, inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return found


def graph() -> dict[str, set[str]]:
    """Module → the mmindex modules it imports (at the top or in a function; TYPE_CHECKING blocks excluded)."""
    table = modules()
    known = set(table)
    edges: dict[str, set[str]] = {name: set() for name in table}
    for name, path in table.items():
        for target, node, _ in imports(path, name, known):
            if target in known and target != name and not _type_checking_only(path, node):
                edges[name].add(target)
    return edges


def _type_checking_only(path: Path, node: ast.AST) -> bool:
    tree = ast.parse(path.read_text())
    for block in ast.walk(tree):
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test):
            if any(child is node or (getattr(child, "lineno", None) == node.lineno) for inner in block.body
                   for child in ast.walk(inner)):
                return True
    return False


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            strongconnect(node)
    return found


def test_cycle_finder_finds_a_planted_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert cycles(graph()) == []


def test_connectors_import_nothing_from_pipeline():
    offending = sorted(f"{name} imports {target}" for name, targets in graph().items()
                       if name.startswith("mmindex.connectors") for target in targets
                       if target.startswith("mmindex.pipeline"))
    assert offending == []


def test_modules_are_small():
    long = {str(path.relative_to(ROOT)): lines for path in modules().values()
            if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_functions_are_short():
    long = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                body = node.end_lineno - node.body[0].lineno + 1  # decorators (click options) and signature aside
                if body > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{first} {node.name}: {body} lines")
    assert long == []


def heavy_modules() -> set[str]:
    """mmindex modules that import a heavy library at their top, directly or through another such module."""
    table = modules()
    known = set(table)
    direct = {name: [target for target, node, inside in imports(path, name, known) if not inside]
              for name, path in table.items()}
    heavy = {name for name, targets in direct.items() if any(t.split(".")[0] in HEAVY for t in targets)}
    while True:
        more = {name for name, targets in direct.items() if name not in heavy and set(targets) & heavy}
        if not more:
            return heavy
        heavy |= more


def test_imports_inside_functions_are_for_heavy_libraries_with_a_reason():
    table = modules()
    known = set(table)
    heavy = heavy_modules()
    wrong = []
    for name, path in table.items():
        lines = path.read_text().splitlines()
        for target, node, inside in imports(path, name, known):
            if not inside:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno} imports {target}"
            if target.split(".")[0] not in HEAVY and target not in heavy:
                wrong.append(f"{where}: not a heavy optional library (import it at the top)")
            elif not any("#" in lines[number] for number in (node.lineno - 2, node.lineno - 1, node.end_lineno - 1)):
                wrong.append(f"{where}: say why it is imported here, in a comment on the line or the line above")
    assert wrong == []


def test_private_names_stay_in_their_module():
    """A name with a leading underscore is its module's own: another module importing it means the two share a
    piece that belongs in one place, public."""
    table = modules()
    crossing = []
    for name, path in table.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmindex"):
                crossing += [f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{alias.name}"
                             for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert crossing == []
