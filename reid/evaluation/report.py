"""Benchmark reports on disk: ``report.json`` (machine-readable) and ``report.md`` (for people).

Both are written to a temporary name and renamed, so an interrupted run never leaves a
truncated report behind.

>>> import tempfile, json
>>> folder = tempfile.mkdtemp()
>>> paths = write_report(folder, {"rank1": 0.5, "mAP": 0.25, "num_query": 2})
>>> json.loads(paths[0].read_text())["rank1"]
0.5
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_PERCENT_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP")
_NOTES = {  # what a reader of report.md needs to read the verification rows
    "TAR@FAR": "TAR@FAR=x: the share of genuine query-gallery pairs accepted at the distance threshold that "
               "accepts a share x of the impostor pairs",
    "fastreid_TPR@FPR": "fastreid_TPR@FPR=x: fast-reid's number under that name, the share of impostor pairs "
                        "rejected when a share x of the genuine pairs is (its ROC takes impostors as positives); "
                        "not comparable with TAR@FAR",
    "suggested_threshold": "suggested_threshold: the distance with the largest TAR - FAR (the histogram's line); ",
}
_COSINE_THRESHOLD = "a cosine distance d is a similarity 1 - d (association.threshold is a similarity)"
_OTHER_THRESHOLD = ("a distance of these settings (re-ranked, query-expanded or euclidean), not a cosine one: "
                    "no association.threshold follows from it")


def write_report(folder: str | Path, report: dict[str, Any], pictures: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``folder``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = _write_atomic(folder / "report.json", json.dumps(report, indent=2, sort_keys=False) + "\n")
    md_path = _write_atomic(folder / "report.md", markdown_report(report, pictures or {}))
    return json_path, md_path


def markdown_report(report: dict[str, Any], pictures: dict[str, str]) -> str:
    """The report as markdown: headline metrics in percent, then every other value, then pictures."""
    title = f"# ReID benchmark: {report.get('model', '?')} on {report.get('dataset', '?')}"
    lines = [title, "", "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {100 * report[key]:.2f}% |" for key in _PERCENT_KEYS if key in report]
    valid, total = report.get("num_valid_query"), report.get("num_query")
    if valid is not None and total is not None and valid < total:
        lines.append(f"| (queries scored) | {valid} of {total}: a query without its person in another camera "
                     "is left out |")
    for key, value in report.items():
        if key in _PERCENT_KEYS or isinstance(value, (dict, list)):
            continue
        rate = key.startswith(("TAR@FAR", "fastreid_TPR@FPR")) and isinstance(value, (int, float))
        shown = f"{100 * value:.2f}%" if rate else f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    cosine = not (report.get("rerank") or report.get("aqe") or report.get("metric") == "euclidean")
    tails = {"suggested_threshold": _COSINE_THRESHOLD if cosine else _OTHER_THRESHOLD}
    notes = [note + tails.get(prefix, "") for prefix, note in _NOTES.items() if any(key.startswith(prefix) for key in report)]
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    for key, value in report.items():
        if isinstance(value, dict):
            lines += ["", f"## {key}", "", "| | |", "|---|---|"]
            lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in value.items()]
    for caption, name in pictures.items():
        lines += ["", f"## {caption}", "", f"![{caption}]({name})"]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
    return path
