"""Demo and test data for the daily ingest: a corpus split into per-day landing files."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from al_tasks.config import LoopConfig
from al_tasks.errors import ConfigError
from al_tasks.io.complaints import DATE_COLUMN, parse_day


def make_landing(
    corpus_path: str | Path,
    out_dir: str | Path,
    dates: Iterable[str | dt.date] | None = None,
    *,
    config: LoopConfig | None = None,
    remainder_path: str | Path | None = None,
) -> dict:
    """Split a CFPB-format corpus into per-day landing files by ``Date received``.

    Writes ``<out_dir>/<YYYY-MM-DD>.csv`` (every column of the corpus, in its order) for
    each day in ``dates`` that has complaints (every dated day when None). With
    ``remainder_path`` the other rows (undated or other days) are written there too, in
    the same format (gzipped when it ends in ``.gz``): a corpus to featurize and seed a
    task on, so the landed complaints are genuinely new to it.

    Returns ``{"files": {date: path}, "n_landed": int, "remainder": str | None,
    "n_remainder": int}``.
    """
    config = config or LoopConfig()
    raw = pd.read_csv(corpus_path, dtype=str, keep_default_na=False)
    if DATE_COLUMN not in raw.columns:
        raise ConfigError(f"{corpus_path}: no {DATE_COLUMN!r} column to split by")
    days = raw[DATE_COLUMN].str.strip().str[:10]
    wanted = set(days[days != ""]) if dates is None else {parse_day(d).isoformat() for d in dates}
    landed = days.isin(wanted) & (days != "")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for day, rows in raw[landed].groupby(days[landed], sort=True):
        path = out_dir / f"{day}.csv"
        tmp = out_dir / f".{day}.csv.tmp"  # hidden until complete: a watching stream skips it
        rows.to_csv(tmp, index=False)
        os.replace(tmp, path)
        files[day] = str(path)
    if remainder_path:
        Path(remainder_path).parent.mkdir(parents=True, exist_ok=True)
        raw[~landed].to_csv(remainder_path, index=False)
    return {
        "files": files,
        "n_landed": int(landed.sum()),
        "remainder": str(remainder_path) if remainder_path else None,
        "n_remainder": int((~landed).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m devstack.landing --out DIR --corpus FILE [--remainder FILE] [--date A --to B]``."""
    import argparse
    import json
    import sys

    from al_tasks.io.complaints import day_range

    parser = argparse.ArgumentParser(prog="python -m devstack.landing", description=make_landing.__doc__)
    parser.add_argument("--out", required=True, help="landing folder to write <day>.csv files into")
    parser.add_argument("--corpus", required=True, help="corpus in CFPB export format")
    parser.add_argument("--remainder", help="also write the rows not landed here (gzipped when it ends in .gz)")
    parser.add_argument("--date", help="first day (default: every dated day)")
    parser.add_argument("--to", help="last day (inclusive); default: --date")
    args = parser.parse_args(argv)
    dates = day_range(args.date, args.to) if args.date else None
    result = make_landing(args.corpus, args.out, dates, remainder_path=args.remainder)
    print(json.dumps({k: v for k, v in result.items() if k != "files"} | {"n_files": len(result["files"])}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
