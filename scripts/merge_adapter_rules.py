#!/usr/bin/env python3
"""Append sessionrec's prometheus-adapter rules to an existing adapter values file, in place.

Helm replaces lists instead of merging them, so `helm upgrade prometheus-adapter --reuse-values -f
helm/sessionrec/files/prometheus-adapter-rules.yaml` would drop every other custom rule. This keeps
them: rules already present with the same series query are replaced, the rest are kept in order.

    helm get values prometheus-adapter -n monitoring -o yaml > adapter-values.yaml
    python3 scripts/merge_adapter_rules.py adapter-values.yaml helm/sessionrec/files/prometheus-adapter-rules.yaml
    helm upgrade prometheus-adapter prometheus-community/prometheus-adapter -n monitoring -f adapter-values.yaml
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml


def merge(existing: dict, ours: dict) -> dict:
    """`existing` adapter values with `ours`' rules.custom appended (same seriesQuery: replaced)."""
    merged = dict(existing or {})
    rules = dict(merged.get("rules") or {})
    custom = list(rules.get("custom") or [])
    added = ours["rules"]["custom"]
    queries = {rule["seriesQuery"] for rule in added}
    rules["custom"] = [rule for rule in custom if rule.get("seriesQuery") not in queries] + added
    merged["rules"] = rules
    return merged


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    target, source = Path(argv[0]), Path(argv[1])
    merged = merge(yaml.safe_load(target.read_text()) or {}, yaml.safe_load(source.read_text()))
    target.write_text(yaml.safe_dump(merged, sort_keys=False))
    print(f"{target}: {len(merged['rules']['custom'])} custom rules")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
