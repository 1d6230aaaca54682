"""What keeping freed memory in the process (nc_engine/compute/process_tuning.py) buys a CPU scan, in one run.

    python -m bench.bench_malloc [--rounds 3] [--preset default]

Runs `nc-tui scan DEMO --headless` (the demo's backdoored CNN, trained once into .cache/bench_app) as a
child process, alternating with NC_KEEP_FREED_MEMORY=0 (glibc's own malloc thresholds) and without it
(nc-tui's default), so load from other work falls on both alike. Prints each run's wall time, user and
system CPU time and minor page faults (from wait4), then the ratios tuned / untuned over all rounds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evaluation.zoo_data import CACHE

MODES = {"glibc default": "0", "kept (nc-tui)": "1"}


def run_once(config: str, preset: str, keep: str, out: str) -> dict:
    env = {**os.environ, "NC_KEEP_FREED_MEMORY": keep, "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "nc_tui.cli", "scan", config, "--headless", "--out", out],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"the scan failed ({status}):\n{output[-2000:]}")
    verdict = next((line.strip() for line in output.splitlines() if line.strip().startswith("Verdict:")), "?")
    return {
        "wall": time.perf_counter() - started,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "faults": usage.ru_minflt,
        "rss_mb": usage.ru_maxrss / 1024,
        "verdict": verdict,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preset", default="default")
    args = parser.parse_args()
    from nc_engine.demo.build import make_demo

    demo = make_demo(CACHE / "bench_app")
    config = Path(demo.config).read_text().replace('preset = "default"', f'preset = "{args.preset}"')
    print(f"demo scan ({args.preset}); {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f} before")
    totals = {mode: {"wall": 0.0, "sys": 0.0, "faults": 0} for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo.toml"
        path.write_text(config.replace('"demo_', f'"{Path(demo.config).parent}/demo_'))
        for k in range(args.rounds):
            for mode, keep in MODES.items():
                r = run_once(str(path), args.preset, keep, tmp)
                for key in totals[mode]:
                    totals[mode][key] += r[key]
                print(
                    f"round {k + 1} {mode:<14} wall {r['wall']:6.1f} s  user {r['user']:6.1f} s  "
                    f"sys {r['sys']:5.1f} s  faults {r['faults']:>9,}  max RSS {r['rss_mb']:5.0f} MB  "
                    f"{r['verdict'][:40]}",
                    flush=True,
                )
    base, kept = totals["glibc default"], totals["kept (nc-tui)"]
    print(
        f"load after {os.getloadavg()[0]:.2f}; all rounds, kept / glibc default: "
        f"wall {kept['wall'] / base['wall']:.2f}, system time {kept['sys'] / max(base['sys'], 1e-9):.2f}, "
        f"page faults {kept['faults'] / base['faults']:.2f}"
    )


if __name__ == "__main__":
    main()
