#!/usr/bin/env python3
"""A collector built the way the seed agents are (psutil + dpkg-query + systemctl, JSON out).

It gathers what `muster-agent scan --only hardware,software,processes,services` gathers, so
the two can be timed side by side. It is a benchmark baseline, not part of Muster.
"""
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone

import psutil


def now():
    return datetime.now(timezone.utc).isoformat()


def hardware():
    uname = platform.uname()
    try:
        os_release = platform.freedesktop_os_release()
    except OSError:
        os_release = {}
    system = {
        "hostname": socket.gethostname(),
        "os_name": os_release.get("NAME"),
        "os_version": os_release.get("VERSION_ID"),
        "kernel": uname.release,
        "arch": uname.machine,
        "boot_time": psutil.boot_time(),
    }
    cpu = {
        "model": platform.processor(),
        "logical_cpus": psutil.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "max_mhz": getattr(psutil.cpu_freq(), "max", None),
    }
    memory = {"total": psutil.virtual_memory().total, "swap_total": psutil.swap_memory().total}
    disks = []
    for part in psutil.disk_partitions(all=False):
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        disks.append({"mount_point": part.mountpoint, "device": part.device,
                      "fs_type": part.fstype, "size": usage.total, "used": usage.used,
                      "free": usage.free})
    stats = psutil.net_if_stats()
    network = [{"name": name, "addresses": [a.address for a in addrs],
                "mtu": stats[name].mtu if name in stats else None,
                "speed": stats[name].speed if name in stats else None}
               for name, addrs in psutil.net_if_addrs().items()]
    users = [u._asdict() for u in psutil.users()]
    return {"system": system, "cpu": cpu, "memory": memory, "filesystems": disks,
            "network": network, "users": users}


def software():
    if not shutil.which("dpkg-query"):
        return []
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Architecture}\t${Installed-Size}\n"],
        capture_output=True, text=True, check=True).stdout
    return [dict(zip(("name", "version", "architecture", "installed_size"), line.split("\t")))
            for line in out.splitlines()]


def processes():
    attrs = ["pid", "ppid", "name", "cmdline", "username", "status", "create_time",
             "cpu_times", "memory_info"]
    result = []
    for proc in psutil.process_iter(attrs):
        info = proc.info
        info["cpu_times"] = sum(info["cpu_times"][:2]) if info["cpu_times"] else None
        info["memory_info"] = info["memory_info"].rss if info["memory_info"] else None
        result.append(info)
    return result


def services():
    if not os.path.isdir("/run/systemd/system"):
        return {"unavailable": "systemd is not running"}
    out = subprocess.run(["systemctl", "list-units", "--all", "--type=service", "--plain",
                          "--no-legend", "--no-pager"], capture_output=True, text=True).stdout
    return [line.split(None, 4) for line in out.splitlines()]


def main():
    report = {"name": "Daemon report", "datetime": now(), "worker_reports": [
        {"name": "hardware", "datetime": now(), "data": hardware()},
        {"name": "software", "datetime": now(), "data": software()},
        {"name": "processes", "datetime": now(), "data": processes()},
        {"name": "services", "datetime": now(), "data": services()},
    ]}
    json.dump(report, sys.stdout, default=str)


if __name__ == "__main__":
    main()
