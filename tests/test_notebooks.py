"""The tutorial notebooks run top to bottom in a real kernel, cleanly."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from helpers import marked, wait_until

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


# What each tutorial's outputs must show, for it to teach what it says.
EXPECTED = {
    "01-quickstart": ["'web': running", "200 text/html", "PORTS", "Serving HTTP", "exited", "SIGTERM"],
    "02-dependencies-and-health": ["'prepare': exited", "'api': running", "'worker' run ", '{"answer": 42}',
                                   "stopped", "prepared"],
    "03-crash-safety": ["alive", "all gone", "leftover processes", "would stop", "killed", "0 leftover processes"],
    # up's table: each provider " started " (first up), "unchanged" (re-run), "restarted" (the edited
    # web app and the worker that requires it); the migration's and the worker's own lines in
    # logs --all; the down report (OUTCOME) with the providers stopped on SIGTERM.
    "04-stacks": ["ACTION", " started ", "unchanged", "restarted", "migration: cache said +PONG",
                  "worker: job", "OUTCOME", "SIGTERM"],
}


def test_every_tutorial_is_numbered_in_order_and_has_expectations():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]
    assert sorted(EXPECTED) == [p.stem for p in NOTEBOOKS]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_clean_and_leaves_nothing(path, state_dir, tmp_path):
    nb = nbformat.read(path, as_version=4)
    # The kernel inherits HOSTCONSOLE_STATE_DIR (set by the state_dir fixture): every
    # host the notebook makes, and every process of theirs, is judged by it below.
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first cell that errors
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "\n".join(str(o.get("text") or o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    for expected in EXPECTED[path.stem]:
        assert expected in text, f"{path.name}: no output shows {expected!r}"

    def ours():
        return {i: m for i, m in marked().items() if m.get("HOSTCONSOLE_STATE_DIR", "").startswith(str(state_dir))}

    wait_until(lambda: not ours(), timeout=15, what="every process the notebook started to be gone")
