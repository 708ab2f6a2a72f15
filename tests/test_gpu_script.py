"""The parts of benchmarks/gpu.py (the book on a CUDA machine) that run without a GPU: argument
parsing, device selection, running a notebook without Jupyter, and the parity of two CPU runs."""

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu", ROOT / "benchmarks" / "gpu.py")
gpu = importlib.util.module_from_spec(spec)
sys.modules["gpu"] = gpu
spec.loader.exec_module(gpu)


def test_arguments():
    a = gpu.parse(["run", "--device", "cpu", "--chapters", "01", "04", "--out", "x"])
    assert a.cmd == "run" and a.device == "cpu" and a.chapters == ["01", "04"] and a.profile == "smoke"
    assert gpu.parse(["all", "--out", "y"]).paper_budget == gpu.PAPER_BUDGET_S
    c = gpu.parse(["compare", "a", "b", "--rtol", "0.2"])
    assert c.rtol == 0.2 and c.atol == 0.02
    with pytest.raises(SystemExit):
        gpu.parse(["run", "--chapters", "09", "--out", "x"])  # no such chapter
    with pytest.raises(SystemExit):
        gpu.parse(["run", "--profile", "huge", "--out", "x"])


def test_device_selection():
    import torch

    assert gpu.pick_device("cpu") == "cpu"
    assert gpu.pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="sees no CUDA"):
            gpu.pick_device("cuda")


def test_code_cells_drop_the_install_cell_and_magics():
    cells = gpu.code_cells(gpu.CHAPTERS["01"])
    assert not any("%pip" in c or "ICLBOOK_INSTALL" in c for c in cells)
    assert "ch.finish()" in cells[-1]


def _notebook(path, value):
    """A two-cell chapter that writes a ledger record, as the real chapters do."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%pip install nothing", metadata={"tags": ["remove-cell"]}),
        nbformat.v4.new_code_cell(
            "from iclbook import ledger, runtime\n"
            "from IPython.display import Markdown, display\n"
            "import matplotlib.pyplot as plt\n"
            "plt.plot([0, 1]); plt.show()\n"
            f"L = ledger.Ledger('99', 'test', page='book/99')\n"
            f"L.identity('an identity', gap=0.0, tol=1e-9)\n"
            f"L.claim('a claim', paper='p', ours='o', value={value}, criterion=ledger.at_most(0.5), no_null='test')\n"
            "display(Markdown('device ' + str(runtime.device())))\n"
            "L.finish()\n"
        ),
    ]
    nbformat.write(nb, path)
    return path


def test_two_cpu_runs_have_parity(tmp_path):
    nb = _notebook(tmp_path / "99_test.ipynb", 0.3)
    first = gpu.run_chapter(str(nb), device="cpu", profile="smoke", seed=0, out=tmp_path / "a")
    second = gpu.run_chapter(str(nb), device="cpu", profile="smoke", seed=0, out=tmp_path / "b")
    assert first["ok"] and second["ok"], (first, second)
    assert gpu.compare(tmp_path / "a", tmp_path / "b") == {"99": []}
    assert "| holds |" in gpu.table([{**first, "device": "cuda"}], {"99": []})
    # a run whose claim lands on the other side of its threshold, far from the first value
    (tmp_path / "other").mkdir()
    other = _notebook(tmp_path / "other" / "99_test.ipynb", 0.9)
    third = gpu.run_chapter(str(other), device="cpu", profile="smoke", seed=0, out=tmp_path / "c")
    assert third["ok"]
    report = gpu.compare(tmp_path / "a", tmp_path / "c")
    assert len(report["99"]) == 1 and "reproduced vs not reproduced" in report["99"][0]
    assert gpu.compare(tmp_path / "a", tmp_path / "c", atol=1.0) == {"99": []}  # within tolerance


def test_parity_flags_a_broken_check(tmp_path):
    row = {"kind": "sanity", "key": "k", "verdict": "holds", "value": 1.0}
    for folder, verdict in (("a", "holds"), ("b", "FAILS")):
        (tmp_path / folder / "records").mkdir(parents=True)
        rec = {"chapter": "98", "rows": [{**row, "verdict": verdict}]}
        (tmp_path / folder / "records" / "r.json").write_text(json.dumps(rec))
    assert gpu.compare(tmp_path / "a", tmp_path / "b") == {"98": ["k: sanity fails in the second run"]}


def test_a_failing_chapter_is_reported(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("raise RuntimeError('boom')")]
    nbformat.write(nb, tmp_path / "97_bad.ipynb")
    res = gpu.run_chapter(str(tmp_path / "97_bad.ipynb"), device="cpu", profile="smoke", seed=0, out=tmp_path / "o")
    assert not res["ok"] and "boom" in res["error"]


def test_display_stand_in_where_ipython_is_missing(monkeypatch, capsys):
    """The GPU image has no IPython: chapters' `display(Markdown(...))` must still run."""
    for name in ("IPython", "IPython.display"):
        monkeypatch.setitem(sys.modules, name, None)  # `import IPython` now fails
    gpu._display_stand_in()
    from IPython.display import Markdown, display

    display(Markdown("| a | b |"))
    assert "| a | b |" in capsys.readouterr().out
