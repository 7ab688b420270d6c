"""scripts/mutation_check.py stays runnable: its mutant list is well formed (the mutants themselves
run on demand only, never in the suite: `python scripts/mutation_check.py`)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "mutation_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("mutation_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutation_check", mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_mutants_are_well_formed():
    mod = _module()
    names = [m.name for m in mod.MUTANTS]
    assert len(names) == len(set(names)) and len(names) >= 12
    for m in mod.MUTANTS:
        assert (REPO / m.file).exists(), m.file
        assert m.old != m.new and m.tests, m.name
        for t in m.tests:
            assert (REPO / t.split("::")[0]).exists(), (m.name, t)


def test_list_reports_each_mutant_and_whether_it_applies():
    out = subprocess.run([sys.executable, str(SCRIPT), "--list", "--json"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["applies"] for r in rows} <= {"ok", "stale"}
    assert len(rows) == len(_module().MUTANTS)
    bad = subprocess.run([sys.executable, str(SCRIPT), "--only", "no_such_mutant"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "unknown mutant no_such_mutant" in bad.stderr


def test_a_stale_snippet_is_reported_not_raised(tmp_path):
    mod = _module()
    (tmp_path / "x.py").write_text("value = 1\n")
    m = mod.Mutant("probe", "x.py", "value = 2", "value = 3", ("tests/none.py",), "probe")
    res = mod.check_one(tmp_path, m, timeout_s=10, baseline=False)
    assert res.status == "stale" and (tmp_path / "x.py").read_text() == "value = 1\n"
