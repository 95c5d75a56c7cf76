#!/usr/bin/env python3
"""Run commands repeatedly and report wall time, CPU time and peak RSS of each run.

CPU and RSS come from the kernel's rusage of each child (os.wait4), so they count the whole
process (all threads) and nothing else. Runs alternate between the commands so machine noise
falls on both alike. Prints a table of medians and the ratio of each command to the first.

usage: measure.py RUNS NAME=COMMAND [NAME=COMMAND ...]
"""
import os
import shlex
import statistics
import subprocess
import sys
import time


def run_once(argv):
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[0]} exited with {os.waitstatus_to_exitcode(status)}")
    return wall * 1e3, (usage.ru_utime + usage.ru_stime) * 1e3, usage.ru_maxrss / 1024


def main():
    runs = int(sys.argv[1])
    commands = [arg.split("=", 1) for arg in sys.argv[2:]]
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
