"""Where reliability runs write their figures: `runs/reliability/` (git-ignored) unless
SESSIONREC_RELIABILITY_OUT names another folder. docs/RELIABILITY.md quotes these files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def report_dir() -> Path:
    folder = Path(os.environ.get("SESSIONREC_RELIABILITY_OUT") or ROOT / "runs" / "reliability")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_report(name: str, data: dict) -> Path:
    """`data` plus when and where it was measured, as `<report_dir>/<name>.json`."""
    path = report_dir() / f"{name}.json"
    stamped = {"measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
                           "python": platform.python_version()}, **data}
    path.write_text(json.dumps(stamped, indent=2, default=str) + "\n")
    return path
