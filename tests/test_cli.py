"""The jupyter-compress command (installed console script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jupyter_compress as jc

CLI = str(Path(sys.executable).with_name("jupyter-compress"))


def test_methods_lists_every_registered_method():
    out = subprocess.run([CLI, "methods", "--json"], capture_output=True, text=True, check=True).stdout
    assert {m["name"] for m in json.loads(out)} == {m["name"] for m in jc.list_methods()}


def test_validate_accepts_a_good_plan_and_rejects_a_typo(tmp_path):
    good = tmp_path / "good.yaml"
    jc.Plan.of(jc.SVDConfig(rank=0.5), jc.PruneConfig(amount=0.5)).save(str(good))
    ok = subprocess.run([CLI, "validate", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "valid plan, 2 step(s)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n- {method: prnue, amount: 0.5}\n")
    res = subprocess.run([sys.executable, "-m", "jupyter_compress", "validate", str(bad)],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "Unknown method 'prnue'. Did you mean 'prune'?" in res.stderr and "Traceback" not in res.stderr
