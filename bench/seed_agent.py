#!/usr/bin/env python3
"""A background agent built the way the seed agents are: `schedule` with a 1-second loop,
psutil + requests, heartbeat every 60 s, telemetry every 10 min, inventory every 60 min, all
at once at start. A baseline for the idle benchmark, not part of Muster.

usage: seed_agent.py BASE_URL
"""
import sys
import time

import psutil
import requests
import schedule

import seed_collector

BASE = sys.argv[1]
SESSION = requests.Session()
HEADERS = {"Authorization": "Bearer bench"}


def heartbeat():
    SESSION.post(f"{BASE}/agents/heartbeat", json={"agent_id": "seed"}, headers=HEADERS, timeout=30)


def telemetry():
    sample = {"cpu_usage": psutil.cpu_percent(interval=1), "memory_usage": psutil.virtual_memory().percent,
              "disk_usage": psutil.disk_usage("/").percent}
    SESSION.post(f"{BASE}/metrics/report", json=sample, headers=HEADERS, timeout=30)


def inventory():
    report = {"hardware": seed_collector.hardware(), "software": seed_collector.software()}
    SESSION.post(f"{BASE}/system/report", json=report, headers=HEADERS, timeout=30)


schedule.every(60).seconds.do(heartbeat)
schedule.every(10).minutes.do(telemetry)
schedule.every(60).minutes.do(inventory)
schedule.run_all()
while True:
    schedule.run_pending()
    time.sleep(1)
