#!/usr/bin/env python3
"""Runs criterion benches several times and reports median/min/max over the runs.

Each run is a separate `cargo bench` process. After each run, every benchmark criterion measured
in it contributes its median estimate (criterion's `estimates.json`, `median.point_estimate`);
the report gives, per benchmark, the median, minimum and maximum of those per-run medians. Ratios
(`--ratio NAME=A/B`) are computed inside each run (both figures from the same process) and then
summarised the same way.

Usage (as root, from the repository root):

    python3 benches/repeat.py --runs 5 --bench backends \
        --ratio 'native vs dvdcli=backends/dvdcli+curl/backends/plugin'
    python3 benches/repeat.py --runs 5 --bench isolator
    python3 benches/repeat.py --runs 5 --bench memory

Extra arguments after `--` go to the bench binary (criterion's filter and options). The memory
bench is not a criterion bench: its printed `memory: LABEL: N kB` lines are collected instead. Any
bench may also print figures of its own, one a line, as `figure: NAME = VALUE UNIT`; they are
summarised the same way (per-run values, then median, minimum and maximum).
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

CRITERION = os.path.join("target", "criterion")


def machine():
    cores = os.cpu_count()
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cores} cores ({model}), Linux {platform.release()}, {platform.machine()}"


def estimates_since(start):
    """Benchmark id -> median estimate (ns) for every estimates.json written after `start`."""
    out = {}
    for root, _dirs, files in os.walk(CRITERION):
        if os.path.basename(root) != "new" or "estimates.json" not in files:
            continue
        path = os.path.join(root, "estimates.json")
        if os.path.getmtime(path) < start:
            continue
        with open(os.path.join(root, "benchmark.json"), encoding="utf-8") as f:
            name = json.load(f)["full_id"]
        with open(path, encoding="utf-8") as f:
            out[name] = json.load(f)["median"]["point_estimate"]
    return out


def human(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def summary(values, fmt):
    return (
        f"{fmt(statistics.median(values))} | {fmt(min(values))} | {fmt(max(values))} | {len(values)}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bench", required=True)
    parser.add_argument(
        "--ratio",
        action="append",
        default=[],
        help="LABEL=NUMERATOR_ID/DENOMINATOR_ID, criterion full ids (ids may contain '/': the "
        "split is at the '/' that makes both ids known)",
    )
    parser.add_argument("rest", nargs="*", help="arguments for the bench binary")
    args = parser.parse_args()

    command = ["cargo", "bench", "-q", "--bench", args.bench, "--"] + args.rest
    print(f"command: {' '.join(command)} (x{args.runs})", file=sys.stderr)
    runs = []
    memory = []
    figures = {}
    for i in range(args.runs):
        start = time.time()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.stderr.write(done.stdout + done.stderr)
            sys.exit(f"run {i + 1} failed with status {done.returncode}")
        for m in re.finditer(r"^figure: (.+?) = ([0-9.]+) (\S+)$", done.stdout, re.M):
            figures.setdefault((m.group(1), m.group(3)), []).append(float(m.group(2)))
        if args.bench == "memory":
            found = re.findall(r"^memory: (.+): (\d+) kB$", done.stdout, re.M)
            if not found:
                sys.exit(f"run {i + 1}: no 'memory: LABEL: N kB' line in:\n{done.stdout}")
            memory.append({label: int(kb) for label, kb in found})
        else:
            found = estimates_since(start)
            if not found:
                sys.exit(f"run {i + 1}: criterion wrote no estimates")
            runs.append(found)
        print(f"run {i + 1}/{args.runs} done", file=sys.stderr)

    print(f"Machine: {machine()}")
    print(f"Command: `{' '.join(command)}`, {args.runs} runs; each figure is the median of the")
    print("per-run medians, with the lowest and highest run.")
    print()
    if memory:
        print("| figure | median | min | max | runs |")
        print("| --- | --- | --- | --- | --- |")
        kb = lambda v: f"{v:,.0f} kB"
        for label in memory[0]:
            values = [m[label] for m in memory if label in m]
            print(f"| {label} | {summary(values, kb)} |")
        return
    names = sorted({n for r in runs for n in r})
    print("| benchmark | median | min | max | runs |")
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        values = [r[name] for r in runs if name in r]
        print(f"| {name} | {summary(values, human)} |")
    for spec in args.ratio:
        label, _, ids = spec.partition("=")
        split = None
        for j in range(len(ids)):
            if ids[j] == "/" and ids[:j] in names and ids[j + 1 :] in names:
                split = (ids[:j], ids[j + 1 :])
        if split is None:
            sys.exit(f"--ratio {spec!r}: not two known benchmark ids; known: {names}")
        values = [r[split[0]] / r[split[1]] for r in runs if split[0] in r and split[1] in r]
        print(f"| ratio: {label} | {summary(values, lambda v: f'{v:.1f}×')} |")
    for (name, unit), values in figures.items():
        print(f"| {name} | {summary(values, lambda v: f'{v:,.4g} {unit}')} |")


if __name__ == "__main__":
    main()
