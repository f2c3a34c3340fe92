"""Write a readout (sessionrec.experiments.readout.analyze) as report.json, report.md and readout.png."""

from __future__ import annotations

import json
from pathlib import Path


def _metric_row(m: dict) -> str:
    return (f"| {m['metric']} | {m['control']:.5f} | {m['treatment']:.5f} | {m['difference']:+.5f} "
            f"[{m['ci_low']:+.5f}, {m['ci_high']:+.5f}] | {m['relative'] * 100:+.2f} % "
            f"[{m['relative_ci_low'] * 100:+.2f}, {m['relative_ci_high'] * 100:+.2f}] | {m['p_value']:.4g} |")


def markdown(report: dict) -> str:
    srm = report["srm"]
    lines = [f"# Experiment `{report['experiment']}`", "", f"**{report['verdict']}**", "",
             "## Units and sample-ratio check", "",
             "| variant | units | planned share | observed share |", "|---|---|---|---|"]
    total = sum(srm["counts"].values())
    for arm, count in srm["counts"].items():
        lines.append(f"| {arm} | {count} | {srm['expected_share'][arm]:.4f} | {count / total:.4f} |")
    lines += ["", f"SRM chi-square {srm['chi2']:.3f}, p = {srm['p_value']:.4g} "
              f"({'MISMATCH: stop here' if srm['mismatch'] else 'no mismatch'}); "
              f"units seen in two arms (excluded): {report['crossover_units_excluded']}; "
              f"units only outside the ramp: {report['outside_ramp_units']}.", ""]
    if srm["mismatch"]:
        return "\n".join(lines) + "\n"
    alpha = report["alpha"]
    lines += [f"## Fixed horizon ({(1 - alpha) * 100:g} % intervals)", "",
              "| metric | control | candidate | difference [CI] | relative [CI] | p |", "|---|---|---|---|---|---|",
              _metric_row(report["conversion"])]
    if "ctr" in report:
        lines.append(_metric_row(report["ctr"]) + " (delta method, unit = guest)")
    seq = report["sequential"]
    lines += ["", f"## Sequential (mSPRT, tau = {seq['tau']:.4g}, daily looks)", "",
              "| day | units c / t | difference | confidence sequence | always-valid p |", "|---|---|---|---|---|"]
    for look in seq["looks"]:
        lines.append(f"| {look['look']} | {look['n_control']} / {look['n_treatment']} | {look['difference']:+.5f} | "
                     f"[{look['cs_low']:+.5f}, {look['cs_high']:+.5f}] | {look['p_value']:.4g} |")
    lines += ["", "![readout](readout.png)", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seq = report["sequential"]
    conversion = report["conversion"]
    days = [look["look"] for look in seq["looks"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    diff = [look["difference"] for look in seq["looks"]]
    low = [max(look["cs_low"], -1.0) for look in seq["looks"]]
    high = [min(look["cs_high"], 1.0) for look in seq["looks"]]
    left.fill_between(days, low, high, alpha=0.25, label="mSPRT confidence sequence")
    left.plot(days, diff, marker="o", label="candidate - control")
    left.errorbar([days[-1] + 0.3], [conversion["difference"]],
                  yerr=[[conversion["difference"] - conversion["ci_low"]], [conversion["ci_high"] - conversion["difference"]]],
                  fmt="s", color="black", capsize=4, label="fixed-horizon CI")
    left.axhline(0, color="grey", lw=0.8)
    span = max(abs(conversion["ci_low"]), abs(conversion["ci_high"])) * 4 or 0.01
    left.set_ylim(-span, span)
    left.set_xlabel("day")
    left.set_ylabel("conversion difference (absolute)")
    left.legend(fontsize=8)
    metrics = [report["conversion"]] + ([report["ctr"]] if "ctr" in report else [])
    for i, m in enumerate(metrics):
        rel, lo, hi = (m["relative"] * 100, m["relative_ci_low"] * 100, m["relative_ci_high"] * 100)
        right.errorbar([rel], [i], xerr=[[rel - lo], [hi - rel]], fmt="o", capsize=4)
    right.set_yticks(range(len(metrics)), [m["metric"] for m in metrics])
    right.axvline(0, color="grey", lw=0.8)
    right.set_xlabel(f"relative effect, % ({(1 - report['alpha']) * 100:g} % CI)")
    fig.suptitle(f"{report['experiment']}: {report['verdict'][:110]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(markdown(report))
    if not report["srm"]["mismatch"]:
        paths["plot"] = out / "readout.png"
        plot(report, paths["plot"])
    return paths
