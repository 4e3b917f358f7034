"""Layers only point down: core <- io <- embed <- brain <- app / cli. Checked on the source's imports
(every one, including those inside functions), so a shortcut back up fails here before it tangles."""

from __future__ import annotations

import ast
from pathlib import Path

import embedlens

PACKAGE = Path(embedlens.__file__).parent
#: The layer of each top-level module or sub-package; a module may import only from its own layer or below.
LAYERS = {
    "config": 0, "utils": 0, "core": 0,
    "io": 1, "images": 1, "display": 1,
    "models": 2, "embed": 2,
    "brain": 3,
    "facade": 4, "app": 4, "cli": 4, "zoo": 4, "demo": 4, "__init__": 4, "__main__": 4,
}


def _unit(parts: list[str]) -> str:
    """The top-level module or sub-package a dotted path inside embedlens belongs to."""
    return parts[0].removesuffix(".py") if parts else "__init__"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, unit) for every import of another part of embedlens in the file."""
    module = path.relative_to(PACKAGE).with_suffix("").parts
    package = list(module[:-1]) if path.name != "__init__.py" else list(module[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                target = [*base, *(node.module.split(".") if node.module else [])]
                if not node.module:  # from . import runs
                    for alias in node.names:
                        out.append((node.lineno, _unit([*base, alias.name])))
                    continue
            elif node.module and node.module.split(".")[0] == "embedlens":
                target = node.module.split(".")[1:]
            else:
                continue
            out.append((node.lineno, _unit(target)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "embedlens":
                    out.append((node.lineno, _unit(alias.name.split(".")[1:])))
    return out


def test_every_module_has_a_layer():
    units = {_unit(list(p.relative_to(PACKAGE).parts)) for p in PACKAGE.rglob("*.py")}
    assert units <= set(LAYERS), units - set(LAYERS)


def test_imports_only_point_down():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(list(path.relative_to(PACKAGE).parts))
        for line, target in imports_of(path):
            if LAYERS.get(target, 99) > LAYERS[unit]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {target} (layer {LAYERS.get(target)} "
                              f"> {LAYERS[unit]})")
    assert not upward, "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The test can fail: a core module importing the brain is reported."""
    fake = PACKAGE / "core" / "_layer_probe.py"
    fake.write_text("def f():\n    from ..brain import runs\n")
    try:
        assert (2, "brain") in imports_of(fake)
    finally:
        fake.unlink()
