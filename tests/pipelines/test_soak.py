"""Soak (not in the default run: `pytest -m soak`): 100x the demo's DROID episodes through the ingest and the loader
(`benchmarks/soak.py`); memory stays flat from the first fifth of the work to the last. Throughput is printed by the
benchmark, never asserted (these machines are shared)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

SOAK = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


@pytest.mark.soak
def test_memory_stays_flat_through_100x_the_demo(tmp_path):
    out = tmp_path / "soak.json"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    result = subprocess.run([sys.executable, str(SOAK), "--scale", "100", "--json", str(out)], capture_output=True,
                            text=True, env=env, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)
    report = json.loads(out.read_text())
    assert report["episodes"] == 600 and report["steps"] > 15_000
    for part in ("ingest", "loader"):
        first, last = report[part][0]["peak_mib"], report[part][-1]["peak_mib"]
        assert last <= 1.15 * first, f"{part}: peak memory {first:.0f} MiB in the first fifth, {last:.0f} in the last"
