"""Execute one of the book's notebooks in a fresh kernel and print one JSON line: its time and its errors.

    python benchmarks/run_notebook.py chapters/03_metric/siamese.md [--save OUT.ipynb] [--cell-timeout 900]

The notebook (a jupytext ``.md``) runs in its own folder, as the book build runs it, at the scale that
``METALEARN_SCALE`` names (else ``full`` on a GPU, ``quick`` on a CPU). Unlike the book build, a cell
that raises does not stop the run: later cells still run, so that one failed assert does not hide the
notebook's time, and every error is listed in the JSON line. ``benchmarks/gpu_session.py --chapters``
calls this for every chapter, several at a time on one GPU.

The JSON line holds ``notebook``, ``seconds`` (kernel start to last output), ``cells``, ``errors``
(cell index, exception name and message), ``scale_line`` (the notebook's own ``scale=...`` printout)
and ``slowest`` (the three slowest cells: seconds and first line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path


def cell_seconds(cell) -> float | None:
    """Seconds between a cell's start and its reply, from the timing nbclient records."""
    timing = cell.get("metadata", {}).get("execution", {})
    try:
        start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return (end - start).total_seconds()


def run(path: Path, cell_timeout: int, save: Path | None) -> dict:
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    start = time.perf_counter()
    failure = None
    try:
        client.execute()
    except Exception as error:  # noqa: BLE001 - a dead kernel or a cell past its timeout: report, do not hide
        failure = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
    seconds = time.perf_counter() - start
    errors, timed, scale_line = [], [], None
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append({"cell": index, "ename": output.get("ename"), "evalue": str(output.get("evalue"))[:400]})
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            for line in text.splitlines():
                if scale_line is None and line.startswith("scale="):
                    scale_line = line[:400]
        took = cell_seconds(cell)
        if took is not None:
            timed.append((took, index, cell.source.strip().splitlines()[0][:100] if cell.source.strip() else ""))
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save)
    timed.sort(reverse=True)
    return {"notebook": str(path), "seconds": round(seconds, 1), "cells": sum(c.cell_type == "code" for c in nb.cells),
            "ok": failure is None and not errors, "failure": failure, "errors": errors, "scale_line": scale_line,
            "slowest": [{"cell": i, "seconds": round(t, 1), "first_line": s} for t, i, s in timed[:3]]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebook", type=Path, help="a jupytext .md notebook of the book")
    parser.add_argument("--save", type=Path, help="write the executed notebook here (.ipynb)")
    parser.add_argument("--cell-timeout", type=int, default=900, help="seconds one cell may take")
    args = parser.parse_args()
    if not args.notebook.is_file():
        print(f"error: {args.notebook} is not a file; give the path of a chapter's .md notebook", file=sys.stderr)
        return 2
    record = run(args.notebook, args.cell_timeout, args.save)
    print(json.dumps(record), flush=True)
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
