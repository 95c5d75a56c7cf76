#!/usr/bin/env python3
"""Idle footprint of long-running agents, side by side: after a warm-up (the first inventory
sent), sample each process's CPU ticks and voluntary context switches (all threads) over a
window, and its RSS at the end.

usage: idle.py WARMUP_S WINDOW_S NAME=PID [NAME=PID ...]
"""
import os
import sys
import time


def ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks


def voluntary_switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        for line in open(f"/proc/{pid}/task/{tid}/status"):
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def main():
    warmup, window = float(sys.argv[1]), float(sys.argv[2])
    procs = [arg.split("=", 1) for arg in sys.argv[3:]]
    time.sleep(warmup)
    before = {name: (ticks(pid), voluntary_switches(pid)) for name, pid in procs}
    time.sleep(window)
    print(f"{'process':<16}{'rss MiB':>9}{'threads':>9}{'cpu ticks':>11}{'vol. ctx sw':>13}   (over {window:.0f} s, after {warmup:.0f} s warm-up; {os.sysconf('SC_CLK_TCK')} ticks/s)")
    for name, pid in procs:
        t0, s0 = before[name]
        print(f"{name:<16}{rss_kib(pid) / 1024:>9.2f}{threads(pid):>9}{ticks(pid) - t0:>11}{voluntary_switches(pid) - s0:>13}")


if __name__ == "__main__":
    main()
