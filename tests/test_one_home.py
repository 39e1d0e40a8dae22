"""Issue 20: each method's knowledge lives in its own module.

A static scan of the package: no string naming a registered method (or one of its aliases) outside the
module that registers it, and no package module over 400 lines. Strings that happen to equal a method name
but mean something else are listed below with the reason (a short, reviewed list, not a pattern).
"""

from __future__ import annotations

import ast
import pathlib

import jupyter_compress  # noqa: F401  (registers the built-in methods)
from jupyter_compress.core.registry import get_method, method_names

PACKAGE = pathlib.Path(jupyter_compress.__file__).parent
MAX_LINES = 400

# (module, string): why the string is not a method name there
NOT_A_METHOD_NAME = {
    ("jupyter_compress.methods.decompose.cp", "svd"): "tensorly's parafac(init='svd')",
    ("jupyter_compress.methods.distill.trainer", "distill"): "the distill() function's own progress bar label",
    ("jupyter_compress.methods.distill.__init__", "distill"): "the distill() function in __all__",
    ("jupyter_compress.__init__", "distill"): "the distill() function in __all__",
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield "jupyter_compress." + ".".join(parts), path


def _method_strings() -> dict[str, str]:
    """Every method name and alias -> the module that registers it."""
    out = {}
    for name in method_names():
        method = get_method(name)
        for key in (name, *method.aliases):
            out[key] = method.apply.__module__
    return out


def _offenders(modules) -> list[str]:
    homes = _method_strings()
    found = []
    for module, path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            home = homes.get(node.value)
            if home is None or home == module or (module, node.value) in NOT_A_METHOD_NAME:
                continue
            found.append(f"{path.name}:{node.lineno}: {node.value!r} (registered in {home})")
    return found


def test_no_method_name_outside_its_module():
    found = _offenders(_modules())
    assert not found, "method names outside their module:\n" + "\n".join(found)


def test_the_scan_finds_a_planted_name(tmp_path):
    """The scan can fail: a module naming 'svd' or an alias outside the method's module is reported, and the
    method's own module is not."""
    planted = tmp_path / "planted.py"
    planted.write_text("STEPS = {'svd': 1}\nMODE = 'int4'\nOK = 'not a method'\n")
    found = _offenders([("jupyter_compress.strategy.planted", planted)])
    assert sorted(f.split(": ", 1)[1].split(" ")[0] for f in found) == ["'int4'", "'svd'"]
    assert [f for f in found if "'int4'" in f] == _offenders([("jupyter_compress.methods.decompose.svd", planted)])


def test_no_module_over_400_lines():
    long = [f"{path.relative_to(PACKAGE.parent)}: {n} lines" for _, path in _modules()
            if (n := len(path.read_text().splitlines())) > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(long)
