"""The arrows of ARCHITECTURE.md, checked: textrouter, toolcache and reasoner never import each other
(nor cli); routing with the default router and importing the CLI keep torch/transformers out."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIBRARIES = ("textrouter", "toolcache", "reasoner")


def _imported_top_modules(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value).split(".")[0])  # importlib.import_module("x.y")
    return names


def _package_files(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("package", LIBRARIES)
def test_library_packages_never_import_each_other(package):
    files = _package_files(package)
    assert files, f"{package} has no Python files"
    forbidden = (set(LIBRARIES) - {package}) | {"cli"}
    offenders = {}
    for f in files:
        bad = _imported_top_modules(f) & forbidden
        if bad:
            offenders[str(f.relative_to(REPO))] = sorted(bad)
    assert not offenders, f"cross-package imports (only cli/ may join them): {offenders}"


def test_import_scanner_sees_imports(tmp_path):
    # The scanner itself must be able to fail: nested, from-, dotted and importlib imports.
    src = tmp_path / "m.py"
    src.write_text("import os.path\nfrom toolcache.audio import x\n"
                   "def f():\n    import reasoner\n    importlib.import_module('textrouter.runtime')\n"
                   "from . import sibling\n")
    assert _imported_top_modules(src) == {"os", "toolcache", "reasoner", "textrouter"}


def _run_python(code: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_routing_with_default_router_loads_no_torch_or_transformers():
    out = _run_python(
        "import json, sys, textrouter\n"
        "r = textrouter.load_router()\n"
        "d = r.route('What does the speaker say about the weather?', ['sunny', 'rain'])\n"
        "print(json.dumps({'action': d['action'], 'actions': r.actions,"
        " 'heavy': sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)}))\n")
    assert out["action"] in out["actions"]
    assert out["heavy"] == [], f"routing imported {out['heavy']}"


def test_cli_import_is_light():
    # `audiorouter --help` imports every command module: none may pull a heavy library at import.
    out = _run_python(
        "import json, sys, cli.main, toolcache, reasoner, textrouter\n"
        "heavy = ('torch', 'transformers', 'onnxruntime', 'faster_whisper', 'librosa')\n"
        "print(json.dumps({'heavy': sorted(m for m in heavy if m in sys.modules)}))\n")
    assert out["heavy"] == [], f"importing the CLI imported {out['heavy']}"
