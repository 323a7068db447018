"""Campaign analysis (``gather``: each job type's analysis per group) and the HTML report."""
from __future__ import annotations

import base64
import html
import io
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..freeenergy.estimators import PoorOverlapError
from ..io import atomic_write_text, write_json
from .runner import check_for
from .spec import JOB_TYPES, Campaign, JobSpec
from .store import Store


def gather(campaign: Campaign) -> dict[str, dict]:
    """Analyse every group whose jobs are all done with valid files; store and return ``{group: result}``.

    Also writes ``results.json`` in the campaign directory. Groups with missing jobs are listed
    with ``status: "incomplete"``.
    """
    store = Store(campaign.db_path)
    groups: dict[str, list[JobSpec]] = defaultdict(list)
    for spec in campaign.jobs:
        groups[spec.group].append(spec)
    results = {}
    for group, specs in sorted(groups.items()):
        missing = [spec for spec in specs if not store.verify(spec.key, check_for(spec))]
        if missing:
            results[group] = {"status": "incomplete", "missing_jobs": len(missing), "jobs": len(specs)}
            continue
        files = {spec.key: {r.name: campaign.directory / r.path for r in store.files(spec.key)} for spec in specs}
        try:
            result = {"status": "ok", **JOB_TYPES[specs[0].type].gather(specs, files, campaign)}
        except PoorOverlapError as exc:
            result = {"status": "poor_overlap", "error": str(exc)}
        store.save_analysis(group, result)
        results[group] = result
    store.close()
    write_json(campaign.directory / "results.json", results)
    return results


def summarise(results: dict[str, dict]) -> list[dict]:
    """Per solute: mean ΔG over repeats, its standard error (MBAR error for one repeat), experiment."""
    by_solute: dict[str, list[dict]] = defaultdict(list)
    for result in results.values():
        if result.get("status") == "ok" and "dG_kcal_mol" in result:
            by_solute[result["solute"]].append(result)
    rows = []
    for solute, runs in sorted(by_solute.items()):
        values = np.array([run["dG_kcal_mol"] for run in runs])
        error = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else runs[0]["error_kcal_mol"]
        rows.append({"solute": solute, "repeats": len(runs), "dG_kcal_mol": float(values.mean()),
                     "error_kcal_mol": float(error), "experiment_kcal_mol": runs[0]["experiment_kcal_mol"]})
    return rows


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _plots(results: dict[str, dict], rows: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = []
    known = [row for row in rows if row["experiment_kcal_mol"] is not None]
    if known:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        x = [row["experiment_kcal_mol"] for row in known]
        ax.errorbar(x, [row["dG_kcal_mol"] for row in known], yerr=[row["error_kcal_mol"] for row in known],
                    fmt="o", capsize=3)
        for row in known:
            ax.annotate(row["solute"], (row["experiment_kcal_mol"], row["dG_kcal_mol"]), fontsize=8)
        span = [min(x + [row["dG_kcal_mol"] for row in known]) - 1, max(x + [row["dG_kcal_mol"] for row in known]) + 1]
        ax.plot(span, span, color="gray", lw=0.8, ls="--")
        ax.set(xlabel="ΔG experiment (kcal/mol)", ylabel="ΔG calculated (kcal/mol)", title="ΔG_hyd vs experiment")
        images.append(_png(fig))
    converged = {group: r["convergence_kcal_mol"] for group, r in results.items() if r.get("convergence_kcal_mol")}
    if converged:
        fig, axes = plt.subplots(1, len(converged), figsize=(3.5 * len(converged), 3.2), squeeze=False)
        for ax, (group, curves) in zip(axes[0], converged.items()):
            for side, marker in (("forward", "o"), ("reverse", "s")):
                if curves[side]:
                    f, d, e = np.array(curves[side]).T
                    ax.errorbar(f, d, yerr=e, marker=marker, capsize=2, label=side)
            ax.set(title=group, xlabel="fraction of samples", ylabel="ΔG (kcal/mol)")
            ax.legend(fontsize=7)
        images.append(_png(fig))
    return images


def _detail(result: dict) -> str:
    """A group's error, or, for a group of another type than hydration, its scalar results."""
    if "error" in result or "dG_kcal_mol" in result:
        return result.get("error", "")
    return ", ".join(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}"
                     for key, value in result.items() if key != "status" and not isinstance(value, (dict, list)))


def _table(header: list[str], rows: list[list]) -> str:
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else html.escape("" if v is None else str(v))  # noqa: E731
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(campaign: Campaign, path: str | os.PathLike | None = None) -> Path:
    """Write ``report.html`` (results, ΔG vs experiment, convergence per group, job states); returns its path."""
    from .runner import status_table

    store = Store(campaign.db_path)
    results = store.analyses()
    table = status_table(store)
    store.close()
    rows = summarise(results)
    parts = [f"<h1>Campaign {html.escape(campaign.name)}</h1>", f"<pre>{html.escape(table)}</pre>",
             "<h2>Results</h2>",
             _table(["solute", "repeats", "ΔG (kcal/mol)", "± (kcal/mol)", "experiment (kcal/mol)"],
                    [[r["solute"], r["repeats"], r["dG_kcal_mol"], r["error_kcal_mol"], r["experiment_kcal_mol"]]
                     for r in rows]),
             "<h2>Per group</h2>",
             _table(["group", "status", "ΔG (kcal/mol)", "MBAR error (kcal/mol)", "detail"],
                    [[g, r.get("status"), r.get("dG_kcal_mol"), r.get("error_kcal_mol"), _detail(r)]
                     for g, r in results.items()]),
             "<h2>Plots</h2>", *_plots(results, rows)]
    style = "table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}"
    document = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(campaign.name)}</title>"
                f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
    return atomic_write_text(path or campaign.directory / "report.html", document)
