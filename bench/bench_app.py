"""What the terminal app costs: the same scan headless and inside the real app, interleaved, in one run.

    python -m bench.bench_app [--rounds 2] [--preset thorough] [--size 120x40] [--driver pty]

The scan is the demo's (nc_engine/demo/build.py: a small backdoored CNN on synthetic glyphs, trained once into
.cache/bench_app), with a bigger budget preset so that it takes tens of seconds. Each run is a fresh
Python process, timed three ways, the same for both:

- process: by this script, from starting the child process until it has exited (interpreter start, imports
  of torch and Textual, the app's start and teardown: everything a user waits for);
- to report: inside the child, from just before the engine (and, for the app, Textual) is imported and
  started until the scan's report is in;
- scan: the engine's own time for the scan (`report.info.seconds`: from run_scan's start to its report),
  the number the issue's target is about: the app's scan within 10% of the headless one.

- headless: `run_scan` with the console's progress listener printing into a pipe, as `nc-tui scan
  --headless | cat` does;
- app: `NCApp` in scan mode, as `nc-tui demo` runs it. With `--driver pty` (the default) it runs with
  Textual's real terminal driver in a pseudo-terminal of `--size`, which this script reads and discards,
  so every frame is rendered and written as escape codes; with `--driver headless` it runs under
  `App.run_test(size=...)` (Textual's headless driver: frames are composed but not written).

Runs alternate (headless, app, headless, app, ...) so that load from other work on a shared machine falls
on both alike; the ratios app/headless are of those three times and of the process's CPU time (all
threads, over "to report"). Both children run with the same environment (OpenMP threads passive, the same
torch thread count, printed), each in a session of its own (on Linux, with autogroup scheduling, a session
is what the scheduler shares the cores between, so neither child shares its share with this script).
Each run also prints its system CPU time and minor page faults: on this shared machine they swing between
identical runs (0.5M to 3M faults, 1.4 to 6.5 s of system time for the same headless scan), and the times
with them; compare rounds whose fault counts are alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import pty
import resource
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench_app"


# ---- the child processes: one scan each, result as JSON in a file
def _config(config_path: str, preset: str, out: str):
    from nc_engine.config.settings import load_config

    cfg = load_config(config_path)
    return dataclasses.replace(
        cfg, scan=dataclasses.replace(cfg.scan, preset=preset), output=dataclasses.replace(cfg.output, dir=out)
    )


def _child_headless(cfg) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()  # before the imports, as for the app
    from nc_engine.run.scan import run_scan
    from nc_tui.console import HeadlessProgress, make_console

    report = run_scan(cfg, HeadlessProgress(make_console()))
    return dict(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu, report=report, threads=_thread_cpu())


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by name (Linux /proc), to see where the app's go."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(task.name), "other")
        out[name] = round(out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick, 2)
    return out


def _child_app(cfg, driver: str, size: tuple[int, int]) -> dict:
    import asyncio

    wall, cpu = time.perf_counter(), time.process_time()  # before the imports, as headless
    from nc_tui.app import NCApp
    from nc_tui.messages import ShowResults

    result: dict = {}

    class TimedApp(NCApp):
        def on_show_results(self, message: ShowResults) -> None:
            result.update(
                wall=time.perf_counter() - wall,
                cpu=time.process_time() - cpu,
                report=message.report,
                threads=_thread_cpu(),
            )
            message.prevent_default()  # not NCApp's handler too: no results screen pushed while exiting
            self.exit(0)

    app = TimedApp(config=cfg, mode="scan")
    if driver == "pty":
        app.run()
    else:

        async def headless() -> None:
            async with app.run_test(size=size) as pilot:
                while not result:
                    await pilot.pause(0.2)

        asyncio.run(headless())
    return result


def child(args: argparse.Namespace) -> None:
    import warnings

    from nc_engine.compute.process_tuning import tune_process

    tune_process()  # as `nc-tui` does for both the app and the console, before torch loads
    warnings.filterwarnings("ignore", category=FutureWarning)
    cfg = _config(args.config, args.preset, args.out)
    if args.mode == "headless":
        result = _child_headless(cfg)
    else:
        result = _child_app(cfg, args.driver, _size(args.size))
    report = result.pop("report")
    import torch  # loaded by the scan already

    usage = resource.getrusage(resource.RUSAGE_SELF)  # system time and page faults: much of the noise
    result.update(
        engine_seconds=report.info.seconds,
        images=report.info.images,
        verdict=report.verdict,
        flagged=report.flagged,
        torch_threads=torch.get_num_threads(),
        sys_seconds=usage.ru_stime,
        faults=usage.ru_minflt,
    )
    Path(args.result).write_text(json.dumps(result))


# ---- the parent: alternate the two and compare
def _size(text: str) -> tuple[int, int]:
    cols, rows = text.lower().split("x")
    return int(cols), int(rows)


def _drain(fd: int, counter: list[int]) -> None:
    """Read the app's terminal output (and throw it away) so it never blocks on a full pty."""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return
        if not data:
            return
        counter[0] += len(data)


def _run_child(mode: str, args: argparse.Namespace, config: str, tmp: Path, index: int) -> dict:
    result = tmp / f"result-{index}.json"
    command = [
        sys.executable,
        "-m",
        "bench.bench_app",
        "--child",
        mode,
        "--config",
        config,
        "--preset",
        args.preset,
        "--out",
        str(tmp / "runs"),
        "--result",
        str(result),
        "--driver",
        args.driver,
        "--size",
        args.size,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the child runs this module from the repository root
    written = [0]
    started = time.perf_counter()
    if mode == "app" and args.driver == "pty":
        cols, rows = _size(args.size)
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env.update(TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
        proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        reader = threading.Thread(target=_drain, args=(master, written), daemon=True)
        reader.start()
        proc.wait(timeout=args.timeout)
        process = time.perf_counter() - started
        reader.join(5)
        os.close(master)
    else:
        proc = subprocess.run(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=args.timeout,
            start_new_session=True,
        )  # as the app's: each child its own session (and autogroup)
        process = time.perf_counter() - started
        written[0] = len(proc.stdout)
    if proc.returncode != 0 or not result.exists():
        raise SystemExit(f"the {mode} run failed (exit code {proc.returncode})")
    return {**json.loads(result.read_text()), "mode": mode, "bytes": written[0], "process": process}


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _load1() -> str:
    """The 1-minute load average now: other work on the machine, which these times depend on."""
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="pairs of (headless, app) runs")
    parser.add_argument("--preset", default="thorough", help="the scan's budget preset (default: thorough)")
    parser.add_argument("--size", default="120x40", help="the app's terminal, COLSxROWS")
    parser.add_argument("--driver", choices=("pty", "headless"), default="pty")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--child", choices=("headless", "app"), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        child(args)
        return

    from nc_engine.demo.build import make_demo

    demo = make_demo(CACHE)
    print(
        f"demo model {demo.config} ({'cached' if demo.cached else f'trained in {demo.train_seconds:.1f}s'}); "
        f"scan preset {args.preset}; app: {args.driver} driver at {args.size}; {os.cpu_count()} CPUs"
    )
    print(f"load before: {_load()}")
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds * 2):
            mode = "headless" if i % 2 == 0 else "app"
            run = _run_child(mode, args, demo.config, Path(tmp), i)
            runs.append(run)
            threads = ", ".join(f"{k} {v:.1f}" for k, v in run.get("threads", {}).items())
            print(
                f"  {mode:<9} process {run['process']:6.1f} s  to report {run['wall']:6.1f} s  "
                f"scan {run['engine_seconds']:6.1f} s  cpu {run['cpu']:6.1f} s  (load {_load1()}; "
                f"{run['images']} images, {run['verdict']} {run['flagged']}, {run['torch_threads']} torch threads, "
                f"{run['bytes']} bytes written; system CPU {run['sys_seconds']:.1f} s, "
                f"{run['faults'] / 1e6:.2f}M page faults; CPU s by thread: {threads})",
                flush=True,
            )
    print(f"load after:  {_load()}")
    _summary(runs)


RATIOS = (("process", "process"), ("to report", "wall"), ("scan", "engine_seconds"), ("cpu", "cpu"))


def _ratios(app: dict, headless: dict) -> str:
    return ", ".join(f"{name} {app[key] / headless[key]:.3f}" for name, key in RATIOS)


def _summary(runs: list[dict]) -> None:
    pairs = list(zip(runs[0::2], runs[1::2], strict=False))
    for k, (h, a) in enumerate(pairs, 1):
        print(f"round {k}: app/headless {_ratios(a, h)}")
    total = {m: {key: sum(r[key] for r in runs if r["mode"] == m) for _, key in RATIOS} for m in ("headless", "app")}
    print(
        f"all rounds: app/headless {_ratios(total['app'], total['headless'])}  "
        "(target: scan <= 1.10; process and to report include the app's start and teardown)"
    )
    # the least noisy number on a shared machine: what the UI itself costs, whatever the others run
    ui = sum(r["threads"].get("MainThread", 0.0) for r in runs if r["mode"] == "app")
    print(
        f"app UI thread: {ui:.1f} s CPU in {total['app']['wall']:.1f} s to report "
        f"({ui / total['app']['wall']:.1%} of one core, its start-up included)"
    )


if __name__ == "__main__":
    main()
