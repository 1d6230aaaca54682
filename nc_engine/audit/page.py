"""audit.html: one page for a whole zoo, beside audit.csv and audit.json: one row per model with its
verdict, flagged labels, reasons, accuracy and time, and a link to the model's own report.html."""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

from nc_engine.files import write_text
from nc_engine.run.runfolder import writing
from nc_engine.verdict.formatting import fmt_num
from nc_engine.verdict.html_page import PAGE, wrap

from .summary import AuditRow, verdict_text

AUDIT_PAGE = "audit.html"


def _link(out: Path, row: AuditRow) -> str:
    """A relative link to the model's page, so the audit folder can be moved or zipped as a whole."""
    if not row.run_folder or not (Path(row.run_folder) / PAGE).is_file():
        return "-"
    target = os.path.relpath(Path(row.run_folder) / PAGE, out)
    return f'<a href="{escape(Path(target).as_posix())}">report</a>'


def audit_page(out: Path, spec: Path, rows: list[AuditRow], complete: bool) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    tally = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
    head = "".join(f"<th>{h}</th>" for h in ("model", "verdict", "flagged", "accuracy", "seconds", "reasons", "page"))
    body = [
        f"<h1>nc-tui audit: {escape(spec.name)}</h1>",
        f'<p class="sub">{escape(str(out))}; {"complete" if complete else "not finished"}</p>',
        f'<p id="verdict" class="{"backdoored" if counts.get("backdoored") else "clean"}">'
        f"{len(rows)} models: {escape(tally)}</p>",
        f'<table id="models"><thead><tr>{head}</tr></thead><tbody>',
    ]
    for r in rows:
        css = ' class="flagged"' if r.verdict == "backdoored" else ""
        body.append(
            f"<tr{css}><td>{escape(r.model)}</td><td>{escape(verdict_text(r))}</td>"
            f"<td>{escape(' '.join(map(str, r.flagged)) or '-')}</td>"
            f'<td class="num">{escape(fmt_num(r.accuracy, ".1%"))}</td><td class="num">{r.seconds:.1f}</td>'
            f"<td>{escape('; '.join(r.reasons))}</td><td>{_link(out, r)}</td></tr>"
        )
    body.append("</tbody></table>")
    return wrap(f"nc-tui audit: {spec.name}", "\n".join(body))


def write_audit_page(out: Path, spec: Path, rows: list[AuditRow], complete: bool) -> None:
    with writing(out, AUDIT_PAGE):
        write_text(out / AUDIT_PAGE, audit_page(out, spec, rows, complete))
