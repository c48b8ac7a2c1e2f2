"""The CLI runs one round on the shipped data, as a user would type it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args, env):
    proc = subprocess.run(
        [sys.executable, "-m", "al_tasks", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_cli_runs_one_round_on_the_shipped_data(tmp_path):
    env = {**os.environ, "AL_WORKSPACE": str(tmp_path / "ws"), "AL_MAX_EVALS": "6", "AL_SPARK_MASTER": "local[2]"}
    seed = tmp_path / "seed.csv"
    out = run_cli("sample-seed", "--size", "230", "--out", str(seed), env=env)
    assert len(pd.read_csv(seed)) == 230 and "n_seed" in out
    out = run_cli("seed", "--labels", str(seed), env=env)
    assert re.search(r"n_train\s+\d+", out)
    out = run_cli("round", "--round", "1", "--batch-size", "100", env=env)
    accuracy = float(re.search(r"accuracy\s+([0-9.]+)", out).group(1))
    macro_f1 = float(re.search(r"macro_f1\s+([0-9.]+)", out).group(1))
    query_csv = Path(re.search(r"query_csv\s+(\S+)", out).group(1))
    assert 0.3 < accuracy <= 1 and 0 < macro_f1 <= 1
    assert query_csv.exists() and len(pd.read_csv(query_csv, encoding="utf-8-sig")) == 100


def test_cli_reports_bad_settings_clearly(tmp_path):
    env = {**os.environ, "AL_WORKSPACE": str(tmp_path / "ws")}
    proc = subprocess.run(
        [sys.executable, "-m", "al_tasks", "config", "--strategy", "best"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "strategy='best'" in proc.stderr
