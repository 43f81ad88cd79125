"""The cohort report: one self-contained HTML file (figures embedded as PNG data URIs, no scripts, no links out).

Sections: run summary and failures; distributions of every metric by level and sex with robust outliers
(Iglewicz & Hoaglin 1993); thumbnails of flagged subjects with their masks; Bland-Altman agreement for
``reference_*`` manifest columns (Bland & Altman 1986); acquisition groups from clustered image statistics and
the metrics that differ between them.
"""

from __future__ import annotations

import html
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from spinekit import __version__
from spinekit.cohort import analysis
from spinekit.cohort.imagestats import feature_columns
from spinekit.cohort.markers import write_text_atomic
from spinekit.cohort.stages import spine_path
from spinekit.cohort.thumbnails import figure_to_data_uri, subject_thumbnail

log = logging.getLogger(__name__)

#: figures per section are capped so a report over 30,000 subjects stays readable (and a few MB).
MAX_METRIC_FIGURES = 60
MAX_THUMBNAILS = 24
MAX_TABLE_ROWS = 200
SEX_COLOURS = {"F": "#d95f02", "M": "#1b9e77", "": "#7570b3"}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px}
th{background:#f3f3f3}.fig{display:inline-block;margin:4px;vertical-align:top}.fig img{max-width:100%}
.note{color:#555;font-size:.9em}.bad{color:#b00}.ok{color:#070}
"""


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _structure_order(structures: list[str]) -> list[str]:
    """Cranio-caudal order for vertebra names (VerSe order), other structures alphabetically after."""
    from spinekit import labels as lab

    rank = {lab.VERTEBRA_NAMES[v]: i for i, v in enumerate(lab.CRANIOCAUDAL_ORDER)}

    def key(name: str) -> tuple[int, str]:
        base = name.split("/")[0].replace("disc_", "")
        return (rank.get(base, len(rank)), name)

    return sorted(structures, key=key)


def _table(frame: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS, floatfmt: str = "{:.3g}") -> str:
    if frame.empty:
        return "<p class=note>none</p>"
    shown = frame.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = []
    for _, row in shown.iterrows():
        cells = []
        for value in row:
            if isinstance(value, float | np.floating):
                text = "" if math.isnan(value) else floatfmt.format(value)
            else:
                text = str(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p class=note>{len(frame) - max_rows} more rows in the CSV files</p>" if len(frame) > max_rows else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _img(uri: str, alt: str) -> str:
    return f'<div class=fig><img src="{uri}" alt="{html.escape(alt)}"></div>'


def distribution_figure(frame: pd.DataFrame, metric: str, unit: str) -> str:
    """Box plots of one metric per structure (cranio-caudal) and sex, points jittered, outliers in red."""
    plt = _plt()
    structures = _structure_order(frame["structure"].astype(str).unique().tolist())
    sexes = sorted(frame["sex"].fillna("").unique()) if "sex" in frame else [""]
    width = 0.8 / max(1, len(sexes))
    figure, axis = plt.subplots(figsize=(min(12, 1.6 + 0.55 * len(structures) * len(sexes)), 3.0), dpi=80)
    rng = np.random.default_rng(0)
    for s_index, sex in enumerate(sexes):
        part = frame if "sex" not in frame else frame[frame["sex"].fillna("") == sex]
        positions, data = [], []
        for i, structure in enumerate(structures):
            values = part.loc[part["structure"].astype(str) == structure, "value"].dropna().to_numpy()
            if len(values):
                positions.append(i + (s_index - (len(sexes) - 1) / 2) * width)
                data.append(values)
        if not data:
            continue
        colour = SEX_COLOURS.get(sex, "#7570b3")
        box = axis.boxplot(data, positions=positions, widths=width * 0.8, showfliers=False, patch_artist=True)
        for patch in box["boxes"]:
            patch.set(facecolor=colour, alpha=0.35)
        for pos, structure in zip(positions, [s for s in structures if s in set(part["structure"].astype(str))],
                                  strict=False):  # fmt: skip
            points = part[part["structure"].astype(str) == structure]
            x = pos + rng.uniform(-width / 4, width / 4, len(points))
            red = (
                points["outlier"].fillna(False).to_numpy(dtype=bool) if "outlier" in points else np.zeros(len(x), bool)
            )
            axis.scatter(x[~red], points["value"].to_numpy()[~red], s=6, color=colour, alpha=0.7)
            axis.scatter(x[red], points["value"].to_numpy()[red], s=18, color="red", marker="x")
        axis.plot([], [], color=colour, lw=6, alpha=0.5, label=sex or "sex unknown")
    axis.set_xticks(range(len(structures)))
    axis.set_xticklabels(structures, rotation=45 if len(structures) > 8 else 0, fontsize=7)
    axis.set_ylabel(unit, fontsize=8)
    axis.set_title(metric, fontsize=9)
    if len(sexes) > 1:
        axis.legend(fontsize=7, loc="best")
    return figure_to_data_uri(figure)


def bland_altman_figure(pair: pd.DataFrame, agreement: analysis.Agreement) -> str:
    plt = _plt()
    mean = (pair["reference"] + pair["measured"]) / 2
    diff = pair["measured"] - pair["reference"]
    figure, axis = plt.subplots(figsize=(4.2, 3.2), dpi=80)
    axis.scatter(mean, diff, s=10)
    for y, style in ((agreement.bias, "-"), (agreement.loa_low, "--"), (agreement.loa_high, "--")):
        if np.isfinite(y):
            axis.axhline(y, color="k", ls=style, lw=1)
    axis.set_xlabel("mean of reference and measured", fontsize=8)
    axis.set_ylabel("measured - reference", fontsize=8)
    axis.set_title(f"{agreement.metric} ({agreement.structure})", fontsize=9)
    return figure_to_data_uri(figure)


def groups_figure(groups: analysis.AcquisitionGroups) -> str:
    plt = _plt()
    figure, axis = plt.subplots(figsize=(4.8, 3.6), dpi=80)
    for group in sorted(groups.labels.unique()):
        members = groups.labels.index[groups.labels == group]
        points = groups.embedding.loc[members]
        axis.scatter(points["pc1"], points["pc2"], s=14, label=f"group {group} (n={len(members)})")
    axis.set_xlabel("principal component 1", fontsize=8)
    axis.set_ylabel("principal component 2", fontsize=8)
    axis.set_title("image statistics (spacing, FOV, intensity)", fontsize=9)
    axis.legend(fontsize=7)
    return figure_to_data_uri(figure)


def histogram_figure(stats: pd.DataFrame, groups: analysis.AcquisitionGroups | None) -> str:
    """Each subject's normalised intensity histogram (1st-99th percentile), coloured by acquisition group."""
    plt = _plt()
    figure, axis = plt.subplots(figsize=(4.8, 3.2), dpi=80)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for _, row in stats.iterrows():
        hist = row.get("histogram")
        if not isinstance(hist, list | np.ndarray) or len(hist) == 0:
            continue
        group = int(groups.labels.get(row["subject"], 1)) if groups is not None else 1
        axis.plot(np.linspace(0, 1, len(hist)), hist, color=colours[(group - 1) % len(colours)], alpha=0.4, lw=1)
    axis.set_xlabel("intensity, 1st to 99th percentile of each image", fontsize=8)
    axis.set_ylabel("fraction of voxels", fontsize=8)
    axis.set_title("intensity histograms", fontsize=9)
    return figure_to_data_uri(figure)


def _thumbnail_section(flagged: pd.DataFrame, rows: dict[str, dict], out_dir: Path) -> str:
    parts = []
    order = flagged.assign(absz=flagged["z"].abs()).sort_values("absz", ascending=False)["subject"].drop_duplicates()
    for subject in order.head(MAX_THUMBNAILS):
        row = rows.get(str(subject))
        if row is None:
            continue
        subject_dir = out_dir / "subjects" / str(subject)
        spine = spine_path(row, subject_dir)
        muscles = Path(row["muscles"]) if row.get("muscles") else subject_dir / "segment" / "muscles.nii.gz"
        reasons = flagged[flagged["subject"] == subject]
        caption = "; ".join(f"{r.structure} {r.metric} z={r.z:+.1f}" for r in reasons.head(3).itertuples())
        try:
            figure = subject_thumbnail(Path(row["image"]), spine if spine.exists() else None, str(subject), muscles)
            parts.append(_img(figure_to_data_uri(figure), f"thumbnail {subject}"))
            parts.append(f"<p class=note>{html.escape(caption)}</p>")
        except Exception as exc:  # noqa: BLE001 - one unreadable image must not lose the report
            log.warning("no thumbnail for %s: %s", subject, exc)
    return "".join(parts) or "<p class=note>no flagged subject</p>"


def build_report(
    out_dir: Path,
    manifest,
    metrics: pd.DataFrame,
    image_stats: pd.DataFrame,
    failures: pd.DataFrame,
    status: pd.DataFrame | None = None,
    title: str = "SpineBiomech cohort report",
) -> Path:
    """Write ``out_dir/report.html`` atomically and return its path."""
    sections: list[str] = []
    n_subjects = len(manifest.subjects) + sum(p.fatal for p in manifest.problems)
    summary = f"<p>{n_subjects} manifest rows, {len(manifest.subjects)} valid.</p>"
    if status is not None and len(status):
        counts = {stage: status[stage].value_counts().to_dict() for stage in status.columns if stage != "subject"}
        table = pd.DataFrame(counts).T.fillna(0).astype(int)
        table.insert(0, "stage", table.index)
        summary += _table(table.reset_index(drop=True))
    sections.append(f"<h2>Run</h2>{summary}")
    sections.append(
        "<h2>Failures</h2><p class=note>Every subject and stage that did not complete, with its reason "
        "(also in failures.csv).</p>" + _table(failures.fillna(""))
    )
    flagged = pd.DataFrame()
    if not metrics.empty:
        scored = analysis.flag_outliers(metrics)
        flagged = scored[scored["outlier"]]
        figures = []
        keys = scored[["metric", "unit"]].drop_duplicates().sort_values("metric").head(MAX_METRIC_FIGURES)
        for metric, unit in keys.itertuples(index=False):
            part = scored[(scored["metric"] == metric) & (scored["unit"] == unit)]
            if part["value"].notna().any():
                figures.append(_img(distribution_figure(part, metric, str(unit)), metric))
        sections.append(
            "<h2>Distributions</h2><p class=note>Per structure (cranio-caudal) and sex; red crosses are outliers, "
            f"|robust z| &gt; {analysis.OUTLIER_Z} within metric, structure and sex (Iglewicz &amp; Hoaglin 1993)."
            "</p>" + "".join(figures)
        )
        columns = ["subject", "structure", "metric", "value", "unit", "z"]
        sections.append(
            "<h2>Outliers</h2>" + _table(flagged.reindex(columns=columns).sort_values("z", key=np.abs, ascending=False))
        )
        rows = {str(r["subject_id"]): r for r in manifest.rows()}
        sections.append("<h2>Flagged subjects</h2>" + _thumbnail_section(flagged, rows, out_dir))
        pairs = analysis.reference_pairs(metrics, manifest.subjects)
        if pairs:
            figures, table = [], []
            for (metric, structure), pair in pairs.items():
                agreement = analysis.bland_altman(pair["reference"], pair["measured"], metric, structure)
                table.append(agreement.__dict__)
                figures.append(_img(bland_altman_figure(pair, agreement), f"Bland-Altman {metric}"))
            sections.append(
                "<h2>Agreement with reference</h2><p class=note>Bland-Altman: bias and 95 % limits of agreement "
                "(Bland &amp; Altman 1986).</p>" + _table(pd.DataFrame(table)) + "".join(figures)
            )
    sections.append(_acquisition_section(image_stats, metrics))
    stamp = time.strftime("%Y-%m-%d %H:%M")
    document = (
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class=note>spinekit {__version__}, {stamp}, manifest {html.escape(str(manifest.path))}</p>"
        + "".join(sections)
        + "</body></html>"
    )
    return write_text_atomic(document, Path(out_dir) / "report.html")


def _acquisition_section(image_stats: pd.DataFrame, metrics: pd.DataFrame) -> str:
    head = "<h2>Acquisition groups</h2>"
    if image_stats.empty:
        return head + "<p class=note>no image statistics (run the qc stage)</p>"
    groups = analysis.acquisition_groups(image_stats, feature_columns())
    if groups is None:
        return head + "<p class=note>too few subjects to look for acquisition groups</p>" + _table(image_stats)
    verdict = (
        f"<p>{groups.k} acquisition groups (Ward clustering of standardised spacing, field of view and intensity "
        f"percentiles; mean silhouette {groups.silhouette:.2f}).</p>"
        if groups.k > 1
        else "<p>No distinct acquisition groups (best mean silhouette "
        f"{groups.silhouette:.2f} &lt; {analysis.MIN_SILHOUETTE}).</p>"
    )
    summary = groups.summary.reset_index()
    body = verdict + _img(groups_figure(groups), "acquisition groups") + _img(histogram_figure(image_stats, groups),
                                                                              "histograms")  # fmt: skip
    body += _table(summary)
    if groups.k > 1 and not metrics.empty:
        effects = analysis.group_effects(metrics, groups.labels)
        differing = effects[effects["differs"]]
        body += (
            f"<p>{len(differing)} of {len(effects)} metric x structure pairs differ between acquisition groups "
            f"(Kruskal-Wallis, Benjamini-Hochberg q &lt; {analysis.FDR}): check protocol harmonisation before "
            "pooling them.</p>" + _table(differing)
        )
    return head + body
