"""The `nc-tui` command: scan, report, demo, mitigate, filter."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import warnings
from functools import partial
from pathlib import Path
from typing import cast

from nc_engine.compute.process_tuning import tune_process
from nc_engine.config.settings import load_config
from nc_engine.errors import NCError
from nc_engine.verdict.report import Report

from .console import HeadlessProgress, TrainingLines, make_console, print_report

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
# --fail-on VERDICTS: a scan whose verdict is listed exits with its code (scripts and CI gate on these).
FAIL_CODES = {"backdoored": 3, "inconclusive": 4}


def _fail_on(value: str) -> frozenset[str]:
    """argparse type of --fail-on: comma-separated verdicts."""
    chosen = frozenset(v.strip() for v in value.split(",") if v.strip())
    unknown = chosen - set(FAIL_CODES)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(FAIL_CODES)}, got {value!r}")
    return chosen


def _add_fail_on(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fail-on",
        type=_fail_on,
        default=frozenset(),
        metavar="VERDICTS",
        help="exit with 3 for a backdoored and 4 for an inconclusive verdict when listed, e.g. "
        "--fail-on backdoored,inconclusive (default: 0 for any finished scan)",
    )


def verdict_exit_code(verdict: str | None, fail_on: frozenset[str]) -> int:
    return FAIL_CODES[verdict] if verdict in fail_on else 0


def _version() -> str:
    """The installed package's version (the package metadata: no engine import, so no torch at start-up)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nc-tui")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nc-tui", description="Neural Cleanse backdoor scanner for PyTorch image classifiers."
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    scan = sub.add_parser("scan", help="scan a model described by a TOML config")
    scan.add_argument("config", nargs="?", help="the scan's TOML config (see sample_configs/)")
    scan.add_argument("--headless", action="store_true", help="plain console output, no terminal UI")
    scan.add_argument("--out", metavar="DIR", help="parent folder for the run folder (overrides [output].dir)")
    scan.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted scan in its run folder")
    scan.add_argument(
        "--trust-pickle",
        action="store_true",
        help="with --resume: let the run folder's trust_pickle = true load its model (runs the model file's code)",
    )
    _add_fail_on(scan)
    report = sub.add_parser("report", help="open a finished run's results (printed when not in a terminal)")
    report.add_argument("run_dir", help="a run folder written by `nc-tui scan`")
    report.add_argument("--print", action="store_true", help="print the tables instead of opening the app")
    report.add_argument(
        "--html", action="store_true", help="write RUN_DIR/report.html (one page to share) and print its path"
    )
    _add_fail_on(report)
    demo = sub.add_parser("demo", help="train a small backdoored model on synthetic data and scan it")
    demo.add_argument("--headless", action="store_true", help="plain console output, no terminal UI")
    demo.add_argument(
        "--dir", default="nc-demo", help="folder for the demo's model, data, config and runs (default: ./nc-demo)"
    )
    demo.add_argument("--clean", action="store_true", help="train the demo model without a backdoor")
    demo.add_argument("--seed", type=int, default=0, help="seed of the demo model (target, trigger corner)")
    _add_fail_on(demo)
    _mitigation_parsers(sub)
    _audit_parser(sub)
    return p


def _audit_parser(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="scan every model of a zoo listed in a spec file, with one summary")
    audit.add_argument("spec", help="the audit's TOML spec: `configs = [...]`, or `models` sharing [model] and [data]")
    audit.add_argument("--headless", action="store_true", help="plain console output, no terminal UI")
    audit.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the models' run folders and the summary (default: SPEC-runs/ beside the spec)",
    )
    _add_fail_on(audit)


def _mitigation_parsers(sub: argparse._SubParsersAction) -> None:
    mit = sub.add_parser("mitigate", help="remove the backdoor a scan found (unlearn, prune) or build an input filter")
    mit.add_argument("run_dir", help="a finished run folder written by `nc-tui scan`")
    mit.add_argument("--method", required=True, help="unlearn, prune or filter")
    mit.add_argument("--labels", help="comma-separated labels to treat as backdoor targets (default: the flagged)")
    mit.add_argument("--options", metavar="TOML", help="a file with a [mitigate] table of options")
    mit.add_argument(
        "--data",
        metavar="CONFIG",
        help="a config whose [data] is clean data for the repair "
        "(default: the scan's data minus the samples the scan used)",
    )
    mit.add_argument(
        "--layer",
        help="the Linear layer (a Keras model: Dense layer) whose input units prune/filter use (default: the last)",
    )
    mit.add_argument("--rescan", action="store_true", help="scan the repaired model again (unlearn, prune)")
    mit.add_argument(
        "--trust-pickle",
        action="store_true",
        help="let the run folder's trust_pickle = true load its model (runs the model file's code)",
    )
    filt = sub.add_parser("filter", help="label images with a detector from `nc-tui mitigate --method filter`")
    filt.add_argument("detector", help="detector.json")
    filt.add_argument("images", nargs="*", help="image files (png, jpg)")
    filt.add_argument(
        "--trust-pickle",
        action="store_true",
        help="let the detector's config say trust_pickle = true (loading the model runs its file's code)",
    )


class MitigationPrinter:
    """A mitigation's events as console lines."""

    def on_prune_step(self, e) -> None:
        print(
            f"  pruned {e.units:4d} units ({e.fraction:4.0%}): accuracy {e.accuracy:.1%}, ASR "
            + ", ".join(f"{v:.1%}" for v in e.asr.values()),
            flush=True,
        )

    def on_train_progress(self, e) -> None:
        print(f"  epoch {e.epoch} batch {e.batch}/{e.batches}: loss {e.loss:.4f}", flush=True)

    def on_stage(self, e) -> None:
        print(e.message, flush=True)

    def on_warning(self, e) -> None:
        print("warning: " + e.message, flush=True)

    def on_mitigation_started(self, e) -> None:
        print(
            f"{e.method}: labels {', '.join(map(str, e.labels))} of {e.run_dir} on {e.device}; "
            f"{e.train_images} clean images to work with, {e.eval_images} held out",
            flush=True,
        )


def cmd_mitigate(args: argparse.Namespace) -> int:
    from nc_engine.mitigate import MitigationOptions, load_options, run_mitigation, table_lines
    from nc_engine.run.events import dispatch

    opts = load_options(args.options) if args.options else MitigationOptions()
    if args.labels:
        try:
            opts.labels = [int(v) for v in args.labels.split(",") if v.strip()]
        except ValueError:
            raise NCError(f"--labels {args.labels!r}: expected comma-separated integers") from None
    opts.data = str(Path(args.data).resolve()) if args.data else opts.data
    opts.layer = args.layer or opts.layer
    opts.rescan = args.rescan or opts.rescan
    opts.trust_pickle = args.trust_pickle or opts.trust_pickle

    report = run_mitigation(args.run_dir, args.method, opts, partial(dispatch, MitigationPrinter()))
    print("\n".join(table_lines(report)))
    print(f"report: {report['report_path']}")
    return 1 if report.get("accepted") is False else 0  # a rejected repair is a failed command


def cmd_filter(args: argparse.Namespace) -> int:
    from nc_engine.mitigate import filter_images

    for path, score, triggered in filter_images(args.detector, args.images, args.trust_pickle):
        print(f"{path}\t{score:.3f}\t{'TRIGGERED' if triggered else 'clean'}")
    return 0


class StopSignals:
    """SIGINT (Ctrl+C) and SIGTERM ask the engine to stop at the next mini-batch, keeping finished work; a
    second one aborts. Remembers which signal came (exit 128 + its number) and restores the old handlers."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.received: int | None = None
        self.previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}

    def _handler(self, signum: int, frame) -> None:  # noqa: ARG002
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.received = signum
        self.stop.set()
        name = "Ctrl+C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: stopping after the current mini-batch (again to abort)...", file=sys.stderr)

    def exit_code(self) -> int:
        return 128 + (self.received or signal.SIGINT)

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def _run_headless(
    config, resume: str | None = None, fail_on: frozenset[str] = frozenset(), trust_pickle: bool = False
) -> int:
    from nc_engine.run.scan import run_scan

    console = make_console()
    stop = threading.Event()
    signals = StopSignals(stop)
    try:
        report = run_scan(config, HeadlessProgress(console), stop, resume=resume, trust_pickle=trust_pickle)
    finally:
        signals.restore()
    console.print()
    if report.complete:
        print_report(console, report)
    elif report.labels:  # the finished labels' table; the verdict waits for the rest
        print_report(console, report, verdict=False)
    console.print(f"run folder: {report.run_dir}")
    if not report.complete:
        done = f"{len(report.labels)} of {len(report.labels_planned)} labels done"
        console.print(f"interrupted ({done}); resume with: nc-tui scan --resume {report.run_dir}")
        return signals.exit_code() if stop.is_set() else EXIT_INTERRUPTED
    return verdict_exit_code(report.verdict, fail_on)


def interactive() -> bool:
    """The app needs a terminal on both ends; piped, cron and CI runs get the console instead."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def _headless_note(args: argparse.Namespace) -> bool:
    """True when the headless console should run; says why when the user did not ask for it."""
    if getattr(args, "headless", False):
        return True
    if not interactive():
        print("note: no terminal (stdin/stdout not a TTY): running headless", file=sys.stderr)
        return True
    return False


def _run_app(**kwargs) -> int:
    from .app import NCApp

    app = NCApp(**kwargs)
    try:
        code = app.run()
    finally:
        app.stop_all_scans()
    for line in app.exit_lines():  # the terminal is back: say where the results are
        print(line)
    return code or 0


def cmd_scan(args: argparse.Namespace) -> int:
    if args.resume and (args.config or args.out):
        given = " and ".join(f for f, v in (("a CONFIG", args.config), ("--out", args.out)) if v)
        raise NCError(
            f"nc-tui scan --resume {args.resume}: continues the run with its own config.toml in its own "
            f"folder; {given} cannot be used with --resume"
        )
    if args.resume:
        if _headless_note(args):
            return _run_headless(None, resume=args.resume, fail_on=args.fail_on, trust_pickle=args.trust_pickle)
        return _run_app(mode="scan", resume=args.resume, trust_pickle=args.trust_pickle)
    if not args.config:
        raise NCError("nc-tui scan: expected a CONFIG file (or --resume RUN_DIR)")
    cfg = load_config(args.config)
    if args.out:
        cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, dir=str(Path(args.out).resolve())))
    if _headless_note(args):
        return _run_headless(cfg, fail_on=args.fail_on)
    return _run_app(config=cfg, mode="setup")


def audit_exit_code(verdicts: list[str], fail_on: frozenset[str]) -> int:
    """Over all models: 3 if any listed backdoored verdict, else 4 if any listed inconclusive, else 2 if any
    model could not be scanned (its input is wrong), else 0."""
    for verdict in ("backdoored", "inconclusive"):
        if verdict in fail_on and verdict in verdicts:
            return FAIL_CODES[verdict]
    return EXIT_ERROR if "error" in verdicts else 0


def cmd_audit(args: argparse.Namespace) -> int:
    from nc_engine.audit.spec import load_spec

    spec = load_spec(args.spec, args.out)  # every config is checked before the first scan
    if not _headless_note(args):
        return _run_audit_app(spec, args.fail_on)
    from nc_engine.audit.run import run_audit

    from .audit_console import AuditProgress, print_summary

    console = make_console()
    stop = threading.Event()
    signals = StopSignals(stop)
    try:
        result = run_audit(spec, AuditProgress(console), stop)
    finally:
        signals.restore()
    print_summary(console, result.rows)
    console.print(f"summary: {result.summary_csv} and {Path(result.summary_json).name}")
    if stop.is_set():
        console.print(
            f"interrupted; continue with: nc-tui audit {args.spec}" + (f" --out {args.out}" if args.out else "")
        )
        return signals.exit_code()
    return audit_exit_code([r.verdict for r in result.rows], args.fail_on)


def _run_audit_app(spec, fail_on: frozenset[str]) -> int:
    from .app import NCApp

    app = NCApp(mode="audit", audit=spec)
    try:
        app.run()
    finally:
        app.stop_all_scans()
    for line in app.exit_lines():
        print(line)
    result = app.audit_result
    if result is None or not result.complete:
        return EXIT_INTERRUPTED
    return audit_exit_code([r.verdict for r in result.rows], fail_on)


def cmd_report(args: argparse.Namespace) -> int:
    report = Report.read(args.run_dir)
    if args.html:
        from nc_engine.run.runfolder import RunFolder
        from nc_engine.verdict.html_page import write_page

        print(f"report page: {write_page(report, RunFolder(Path(report.run_dir)))}")
        return verdict_exit_code(report.verdict, args.fail_on)
    if not args.print and interactive():
        return _run_app(mode="report", report=report)
    console = make_console()
    console.print(
        f"run folder {args.run_dir}: model {report.info.model}, clean accuracy "
        f"{report.info.clean_accuracy:.2%}, {report.info.seconds:.1f}s"
    )
    print_report(console, report)
    return verdict_exit_code(report.verdict, args.fail_on)


def cmd_demo(args: argparse.Namespace) -> int:
    from nc_engine.demo.build import make_demo

    if not _headless_note(args):

        def prepare(progress):
            return load_config(
                make_demo(args.dir, backdoor=not args.clean, seed=args.seed, on_progress=progress).config
            )

        return _run_app(mode="scan", prepare=prepare)
    console = make_console()
    kind = "clean" if args.clean else "backdoored"
    console.print(f"demo: training a small {kind} CNN on synthetic 28x28 images in {args.dir}/ ...")
    info = make_demo(args.dir, backdoor=not args.clean, seed=args.seed, on_progress=TrainingLines(console))
    console.print(
        f"demo: clean accuracy {info.clean_accuracy:.1%}"
        + (
            # trigger is set whenever target is
            f"; the real trigger is a 4x4 white square at row {cast(dict, info.trigger)['top']}, "
            f"column {cast(dict, info.trigger)['left']}"
            f" that sends {info.attack_success_rate:.1%} of images to label {info.target}"
            if info.target is not None
            else ""
        )
        + (" (cached)" if info.cached else f" (trained in {info.train_seconds:.1f}s)")
    )
    console.print(f"demo: scanning with {info.config}")
    return _run_headless(load_config(info.config), fail_on=args.fail_on)


def main(argv: list[str] | None = None) -> int:
    tune_process()  # before any command imports torch
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
    args = _parser().parse_args(argv)
    if args.command is None:
        if interactive():
            return _run_app(mode="setup")
        _parser().print_help()
        return 0
    commands = {
        "scan": cmd_scan,
        "report": cmd_report,
        "demo": cmd_demo,
        "mitigate": cmd_mitigate,
        "filter": cmd_filter,
        "audit": cmd_audit,
    }
    try:
        return commands[args.command](args)
    except NCError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
