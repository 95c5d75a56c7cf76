#!/usr/bin/env python3
"""Run commands repeatedly and report wall time, CPU time and peak RSS of each run.

Each run goes through the `rusage` launcher (bench/rusage.c): CPU and RSS are the kernel's
rusage of the command, all threads, nothing else, and not inflated by this Python process.
Runs alternate between the commands so machine noise falls on all alike. Prints a table of
medians and the ratio of each command's CPU to the first's.

usage: measure.py RUSAGE RUNS NAME=COMMAND [NAME=COMMAND ...]
"""
import shlex
import statistics
import subprocess
import sys


RUSAGE = None


def run_once(argv):
    out = subprocess.run([RUSAGE, *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, check=True).stdout
    wall, cpu, rss_kib, code = out.split()
    if code != "0":
        sys.exit(f"{argv[0]} exited with {code}")
    return float(wall), float(cpu), int(rss_kib) / 1024


def main():
    global RUSAGE
    RUSAGE = sys.argv[1]
    runs = int(sys.argv[2])
    commands = [arg.split("=", 1) for arg in sys.argv[3:]]
    results = {name: [] for name, _ in commands}
    for name, command in commands:  # warm the page cache once, untimed
        run_once(shlex.split(command))
    for _ in range(runs):
        for name, command in commands:
            results[name].append(run_once(shlex.split(command)))
    base = None
    print(f"{'command':<16}{'wall ms':>10}{'cpu ms':>10}{'rss MiB':>10}{'cpu ratio':>11}   (median of {runs})")
    for name, _ in commands:
        wall, cpu, rss = (statistics.median(col) for col in zip(*results[name]))
        base = base or cpu
        print(f"{name:<16}{wall:>10.2f}{cpu:>10.2f}{rss:>10.2f}{cpu / base:>10.1f}x")


if __name__ == "__main__":
    main()
