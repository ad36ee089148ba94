"""Import circles among the modules of the given packages: groups of modules that import each other, directly or
through others (strongly connected components of the import graph with more than one module).

    python scripts/import_circles.py tts analysis    # prints one circle a line and exits 1; nothing and 0 when none

Every import statement counts, inside functions too (a function-level import still ties the modules together). An
import names the longest module of these packages it reaches: `from tts.grading import symbolic` is an import of the
package `tts.grading` and of its module `tts.grading.symbolic` (so, inside tts.grading, a circle through its
__init__.py); `import tts.grading.symbolic` names the module only. Standard library only (ast).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def modules(roots: list[Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file below each package root (the root's parent is the import root)."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of `mods` it imports."""
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y, from .. import z
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:  # the longest module of ours it names
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return sorted(found)


def main(argv: list[str]) -> int:
    roots = [Path(arg) for arg in argv]
    missing = [str(root) for root in roots if not (root / "__init__.py").is_file()]
    if not roots or missing:
        print(f"usage: python scripts/import_circles.py PACKAGE_DIR ...; not a package: {', '.join(missing)}",
              file=sys.stderr)
        return 2
    found = circles(imports(modules(roots)))
    for circle in found:
        print("{" + ", ".join(circle) + "}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
