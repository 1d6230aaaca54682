"""One self-contained HTML page per run folder (RUN/report.html): the verdict sentence, the trigger-size
chart with its flagging line, each label's row with its reversed mask, pattern and fusion, each detector's
evidence, the config, the fingerprints, versions and timings. Images are embedded, no script or outside
file is used, so the page opens offline, mails as one file and prints as shown.

Everything from the run folder (class names, paths, config text) is escaped: a folder may come from
someone else, and a class name is the model owner's text."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.metadata
import math
import platform
from html import escape
from pathlib import Path

from nc_engine.detectors.margin_result import NAME as MARGIN_NAME
from nc_engine.detectors.margin_result import MarginResult
from nc_engine.detectors.transform_result import KINDS as TRANSFORM_KINDS
from nc_engine.detectors.transform_result import NAME as TRANSFORM_NAME
from nc_engine.detectors.transform_result import TransformResult
from nc_engine.errors import RunFolderError
from nc_engine.files import write_text
from nc_engine.run.runfolder import RunFolder, writing

from .charts import bar_chart
from .formatting import TABLE_COLUMNS, fmt_num, table_rows, verdict_line
from .report import Report
from .sentence import verdict_sentence

PAGE = "report.html"
MAX_PICTURE_BYTES = 2 * 1024 * 1024  # a trigger PNG the scan wrote is a few KB; a bigger file is not embedded

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #111; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
.sub { color: #444; margin-top: 0; word-break: break-all; }
#verdict { padding: 0.8em 1em; border-radius: 4px; font-weight: 600; border: 2px solid #000; }
#verdict.backdoored { background: #fde2e1; border-color: #b3261e; }
#verdict.clean { background: #e3f4e6; border-color: #1e7b34; }
#verdict.inconclusive, #verdict.none { background: #fff4d6; border-color: #8a6100; }
table { border-collapse: collapse; } td, th { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flagged td { font-weight: 700; color: #b3261e; }
img.trigger { width: 56px; height: 56px; image-rendering: pixelated; border: 1px solid #999; }
.chart .bar { fill: #4a7fb0; } .chart .bar.flagged { fill: #b3261e; } .chart .cut { stroke: #000; stroke-width: 2; }
.chart text { font: 11px system-ui, sans-serif; } .caption { color: #444; font-size: 0.9em; margin-top: 0.2em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; } dt { font-weight: 600; }
dd { margin: 0; word-break: break-all; }
@media print {
  body { margin: 0; max-width: none; font-size: 11px; }
  #verdict, tr.flagged td, .chart .bar { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  tr, svg, img { break-inside: avoid; }
}
"""


def page_path(folder: RunFolder) -> Path:
    return folder.file(PAGE)


def write_page(report: Report, folder: RunFolder) -> Path:
    """Write RUN/report.html for this report; returns its path."""
    path = page_path(folder)
    with writing(folder.path, PAGE):
        write_text(path, html_page(report, folder))
    return path


def html_page(report: Report, folder: RunFolder) -> str:
    """The whole page as text."""
    title = f"nc-tui scan: {report.info.model or folder.path.name}"
    verdict_class = report.verdict or "none"
    sections = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">run folder {escape(str(folder.path))}</p>',
        f'<p id="verdict" class="{escape(verdict_class)}">{escape(verdict_sentence(report))}</p>',
        "<h2>Trigger size per label (Neural Cleanse)</h2>",
        _trigger_chart(report),
        _margin_section(report),
        _transform_section(report),
        "<h2>Labels, most anomalous first</h2>",
        _label_table(report, folder),
        "<h2>The statistics behind the verdict</h2>",
        f'<p id="details">{escape(verdict_line(report))}</p>',
        *_reasons(report),
        "<h2>Scan</h2>",
        _scan_facts(report),
        "<h2>Fingerprints</h2>",
        _fingerprints(folder),
        "<h2>Config</h2>",
        f"<pre>{escape(_config_text(folder))}</pre>",
        "<h2>Versions</h2>",
        _versions(),
    ]
    return wrap(title, "\n".join(s for s in sections if s))


def wrap(title: str, body: str) -> str:
    """A whole page around `body` (already escaped HTML): the style inline, no script, nothing fetched."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # no script, no outside file: the page cannot fetch or run anything
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">\n"
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _trigger_chart(report: Report) -> str:
    rows = sorted(report.labels, key=lambda r: (not r.flagged, r.l1_norm if math.isfinite(r.l1_norm) else math.inf))
    bars = [(_bar_name(r.label, r.name), r.l1_norm, report.cutoff_of(r), r.flagged) for r in rows]
    cut = report.cutoff_of(rows[0]) if rows else None
    legend = (
        "L1 norm of each label's reversed mask on a log scale, flagged first; the black tick is the label's "
        f"flagging line (flagged below it; median-share line L1 {fmt_num(report.cutoff_l1, '.1f')})"
        if cut is not None
        else "L1 norm of each label's reversed mask on a log scale"
    )
    return bar_chart(bars, "trigger size per label", legend, "trigger-chart")


def _bar_name(label: int, name: str) -> str:
    return str(label) if name == str(label) else f"{label} {name[:20]}"


def _margin_section(report: Report) -> str:
    evidence = report.detectors.get(MARGIN_NAME)
    if not isinstance(evidence, dict):
        return ""
    result = MarginResult.from_dict(evidence)
    cut = result.null_median * result.lead_threshold if result.null_median else None
    bars = [
        (_bar_name(k, report.name_of(k)), m, cut, k in result.flagged)
        for k, m in sorted(enumerate(result.margins), key=lambda pair: -pair[1] if math.isfinite(pair[1]) else 0)
    ]
    legend = (
        f"largest reachable logit margin per label, log scale; the tick is {result.lead_threshold:g}x the "
        "others' median"
    )
    return "\n".join(
        [
            "<h2>Largest reachable margin per label (max-margin)</h2>",
            bar_chart(bars, "max-margin per label", legend, "margin-chart"),
            f'<p id="margin-summary">{escape(result.summary())}</p>',
        ]
    )


def _transform_section(report: Report) -> str:
    evidence = report.detectors.get(TRANSFORM_NAME)
    if not isinstance(evidence, dict):
        return ""
    result = TransformResult.from_dict(evidence)
    parts = ["<h2>Weakest transform per label (transform search)</h2>"]
    for finding in result.findings:
        values = result.costs.get(finding.kind, [])
        cut = finding.median / finding.cut if finding.median else None
        bars = [
            (_bar_name(k, report.name_of(k)), v, cut, finding.flagged and k == finding.top)
            for k, v in sorted(((k, v) for k, v in enumerate(values) if v is not None), key=lambda pair: pair[1])
        ]
        words = TRANSFORM_KINDS[finding.kind][0]
        legend = (
            f"strength of the weakest {words} that turns clean images into each label, log scale; the tick is "
            f"the others' median over {finding.cut:g}; {len(values) - len(bars)} labels never reached"
        )
        parts.append(bar_chart(bars, f"transform search: {words}", legend, f"transform-{finding.kind}-chart", ".3g"))
    parts.append(f'<p id="transform-summary">{escape(result.summary())}</p>')
    return "\n".join(parts)


def _label_table(report: Report, folder: RunFolder) -> str:
    rows = table_rows(report, folder.mask_area([r.label for r in report.labels]))
    head = "".join(f"<th>{escape(c)}</th>" for c in TABLE_COLUMNS) + "<th>mask</th><th>pattern</th><th>fusion</th>"
    lines = [f'<table id="labels"><thead><tr>{head}</tr></thead><tbody>']
    for shown in rows:
        row = report.row(shown["label"])
        cells = "".join(
            f'<td class="num">{escape(c)}</td>' if i in (0, 2, 3, 4, 5) else f"<td>{escape(c)}</td>"
            for i, c in enumerate(shown["cells"])
        )
        label = shown["label"]
        files = (("mask", row.mask_png), ("pattern", row.pattern_png), ("fusion", row.fusion_png)) if row else ()
        pictures = "".join(f"<td>{_picture(folder, path, f'label {label} {kind}')}</td>" for kind, path in files)
        css = ' class="flagged"' if shown["flagged"] else ""
        lines.append(f'<tr{css} data-label="{label}">{cells}{pictures}</tr>')
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _picture(folder: RunFolder, relative: str, alt: str) -> str:
    """A trigger PNG embedded as data, or a word saying why not."""
    if not relative:
        return "-"
    path = folder.file(relative)
    try:
        if not path.is_file() or path.is_symlink():
            return "missing"
        if path.stat().st_size > MAX_PICTURE_BYTES:
            return "too large to embed"
        data = path.read_bytes()
    except OSError:
        return "unreadable"
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "not a PNG"
    return f'<img class="trigger" alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _reasons(report: Report) -> list[str]:
    if not report.reasons:
        return []
    items = "".join(f"<li>{escape(r)}</li>" for r in report.reasons)
    return [f'<ul id="reasons">{items}</ul>']


def _facts(pairs: list[tuple[str, str]], element_id: str) -> str:
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in pairs if v)
    return f'<dl id="{element_id}">{rows}</dl>'


def _scan_facts(report: Report) -> str:
    info = report.info
    margin = report.detectors.get(MARGIN_NAME)
    margin_time = ""
    if isinstance(margin, dict):
        result = MarginResult.from_dict(margin)
        margin_time = f"{result.seconds:.1f} s, {result.images:,} images"
    transform = report.detectors.get(TRANSFORM_NAME)
    transform_time = ""
    if isinstance(transform, dict):
        found = TransformResult.from_dict(transform)
        transform_time = f"{found.seconds:.1f} s, {found.images:,} transformed images"
    return _facts(
        [
            ("model", info.model),
            ("data", info.data),
            ("clean accuracy", fmt_num(info.clean_accuracy, ".2%")),
            ("device", info.device),
            ("strategy", f"{info.strategy}, {info.group_size} at a time" if info.strategy else ""),
            ("samples", f"{info.samples} to optimise on, {info.asr_samples} held out" if info.samples else ""),
            ("Neural Cleanse", f"{info.seconds:.1f} s, {info.images:,} stamped images"),
            ("max-margin", margin_time),
            ("transform search", transform_time),
            ("screening", str(report.screening.get("why", "")) if report.screening else "off"),
        ],
        "scan",
    )


def _fingerprints(folder: RunFolder) -> str:
    try:
        prints = folder.read_fingerprints()
    except RunFolderError as exc:
        return f"<p>{escape(str(exc))}</p>"
    if not prints:
        return "<p>none recorded (a folder from before fingerprints)</p>"
    return _facts([(str(k), str(v)) for k, v in prints.items()], "fingerprints")


def _config_text(folder: RunFolder) -> str:
    try:
        return folder.config_text()
    except RunFolderError as exc:
        return str(exc)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _versions() -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return _facts(
        [
            ("nc-tui", _version("nc-tui")),  # the package's metadata: nc_engine/__init__ imports the scan
            ("Python", platform.python_version()),
            ("torch", _version("torch")),
            ("numpy", _version("numpy")),
            ("page written", when),
        ],
        "versions",
    )
