"""The case report: one self-contained HTML page per case (no external files, opens offline in any browser).

It holds what a cytologist signs off: the differential table (:func:`cytoreview.review.differential.differential`),
a bar chart of the class distribution (inline SVG), thumbnails of the rarest-class and most doubtful cells and of every
corrected cell (inline PNG, one physical scale, see :mod:`cytoreview.review.cell_crops`), the model packs (name,
version, SHA-256 of the ONNX file as recorded in the prediction store), the reviewers with the dates of their first and
last change, and the review progress.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from cytoreview import __version__
from cytoreview.class_names import name_key
from cytoreview.errors import ProjectError
from cytoreview.review.cell_crops import CROP_UM, CropReader
from cytoreview.review.differential import (EXCLUDED_BY_DEFAULT, NO_CASE, case_key, cell_table, differential)

#: Thumbnails per section of the report.
N_RARE = 12
N_DOUBTFUL = 12
N_CORRECTED = 48
#: Thumbnail side in the report, px.
REPORT_THUMB_PX = 80


def report_cases(project) -> list[str]:
    """Case keys of the project's images that hold cells, sorted."""
    cells = cell_table(project)
    return sorted({case_key(c) for c in cells["case_id"]})


def _png_data_uri(rgb: np.ndarray) -> str:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _bar_chart_svg(table: pd.DataFrame, colours: dict[str, str]) -> str:
    """Horizontal bars of the share of each counted class (inline SVG)."""
    counted = table[table["in_denominator"]]
    row_h, label_w, bar_w = 22, 170, 360
    height = row_h * max(len(counted), 1) + 10
    parts = [f'<svg id="distribution" xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 70}" '
             f'height="{height}" role="img" aria-label="class distribution">']
    top = float(counted["percent"].max()) if len(counted) else 100.0
    for k, row in enumerate(counted.to_dict("records")):
        y = 5 + k * row_h
        w = 0 if not top else bar_w * float(row["percent"]) / top
        colour = colours.get(row["class"], "#888888")
        name = html.escape(str(row["class"]))
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="13">{name}</text>')
        parts.append(f'<rect class="bar" data-class="{name}" x="{label_w}" y="{y + 2}" width="{w:.1f}" '
                     f'height="{row_h - 6}" fill="{colour}"/>')
        parts.append(f'<text x="{label_w + w + 5:.1f}" y="{y + 15}" font-size="12">{row["percent"]:.1f}%</text>')
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def _differential_html(table: pd.DataFrame, per: float) -> str:
    rows = []
    for row in table.to_dict("records"):
        note = "" if row["in_denominator"] else ("not counted" if not np.isnan(row["per_denominator"]) else "excluded")
        rows.append(f'<tr data-class="{html.escape(str(row["class"]))}"><td>{html.escape(str(row["class"]))}</td>'
                    f'<td class="num">{row["count"]}</td><td class="num">{_fmt(row["percent"])}</td>'
                    f'<td class="num">{_fmt(row["per_denominator"])}</td><td>{note}</td></tr>')
    denominator = int(table["denominator"].iloc[0]) if len(table) else 0
    return (f'<table id="differential"><thead><tr><th>class</th><th>count</th><th>%</th><th>per {per:g}</th>'
            f'<th></th></tr></thead><tbody>{"".join(rows)}</tbody>'
            f'<tfoot><tr><td>counted cells</td><td class="num" id="denominator">{denominator}</td>'
            f'<td></td><td></td><td></td></tr></tfoot></table>')


def _thumbs_html(section_id: str, cells: pd.DataFrame, crops: CropReader, caption) -> str:
    if cells.empty:
        return f'<p class="none" id="{section_id}">none</p>'
    figs = []
    for row in cells.to_dict("records"):
        crop = crops.crop(row)
        mark = ' class="padded" title="part of this crop lies outside the image (hatched)"' if crop.padded else ""
        figs.append(f'<figure data-item="{int(row["item_id"])}"{mark}><img alt="cell {int(row["item_id"])}" '
                    f'width="{crops.thumb_px}" height="{crops.thumb_px}" src="{_png_data_uri(crop.rgb)}">'
                    f"<figcaption>{html.escape(caption(row))}</figcaption></figure>")
    return f'<div class="thumbs" id="{section_id}">{"".join(figs)}</div>'


def _packs(project, image_ids: Iterable[int], cells: pd.DataFrame) -> list[dict]:
    """Packs behind the case's cells: name, version and the SHA-256 the prediction store recorded."""
    found: dict[tuple[str, str], dict] = {}
    wanted = set(int(i) for i in image_ids)
    for record in project.prediction_stores():
        store = record.to_dict()
        if int(store["image_id"]) not in wanted:
            continue
        sha = None
        try:
            import zarr

            sha = zarr.open_group(str(store["path"]), mode="r").attrs.get("pack_sha256")
        except Exception:  # noqa: BLE001 - a moved or damaged store: the hash is reported as not found
            sha = None
        found[(store["pack"], store["pack_version"])] = {"pack": store["pack"], "version": store["pack_version"],
                                                        "sha256": sha, "source": Path(store["path"]).name}
    for model in sorted({m for m in cells["model"] if isinstance(m, str)}):
        name, _, version = model.partition("@")
        found.setdefault((name, version), {"pack": name, "version": version, "sha256": None,
                                           "source": "cell items (no prediction store imported)"})
    return list(found.values())


def _reviewers(project, item_ids: set[int]) -> pd.DataFrame:
    journal = project.history()
    journal = journal[journal["item_id"].isin(item_ids) & journal["reviewer"].notna()
                      & journal["action"].isin(["set", "accept", "undo", "redo", "merge"])]
    if journal.empty:
        return pd.DataFrame(columns=["reviewer", "changes", "first", "last"])
    grouped = journal.groupby("reviewer")["timestamp"]
    return pd.DataFrame({"reviewer": grouped.size().index, "changes": grouped.size().to_numpy(),
                         "first": grouped.min().to_numpy(), "last": grouped.max().to_numpy()})


_CSS = """
body{font-family:system-ui,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums} tfoot td{font-weight:600}
.meta{color:#555;font-size:13px} .thumbs{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;width:86px;font-size:10px;text-align:center} figure img{border:1px solid #ccc;image-rendering:auto}
figure.padded img{border:2px dashed #c83c3c} .none{color:#777} .warn{color:#a33}
progress{width:260px}
"""


def render_case_report(project, case_id: str, *, crop_um: float = CROP_UM, counted: Iterable[str] | None = None,
                       per: float = 100.0, unidentified_below: float | None = None) -> str:
    """The HTML text of one case's report (see the module docstring).

    Raises
    ------
    ProjectError
        The project has no cells, or the case has none.
    """
    cells = cell_table(project, unidentified_below=unidentified_below)
    if cells.empty:
        raise ProjectError(f"project {project.folder} holds no cells: nothing to report (run a cell pack with "
                           "`cytoreview predict` and import its store first)")
    cells = cells[cells["case_id"].map(case_key) == case_id]
    if cells.empty:
        raise ProjectError(f"case {case_id!r} has no cells in project {project.folder} "
                           f"(cases with cells: {', '.join(report_cases(project))})")
    table = differential(project, by="case", case_id=case_id, counted=counted, per=per,
                         unidentified_below=unidentified_below)
    schema = project.schema
    colours = {c.name: c.color for c in schema.classes}
    crops = CropReader(project, crop_um=crop_um, thumb_px=REPORT_THUMB_PX)
    try:
        counts = cells["class"].value_counts()
        excluded = {name_key(n) for n in EXCLUDED_BY_DEFAULT}
        countable = [c for c in counts.index if name_key(c) not in excluded]
        rare_order = sorted(countable, key=lambda c: (counts[c], str(c)))
        rare = pd.concat([cells[cells["class"] == c].sort_values("confidence") for c in rare_order]).head(N_RARE) \
            if rare_order else cells.head(0)
        doubtful = cells.assign(_c=cells["confidence"].fillna(-1.0)).sort_values(["_c", "item_id"]).head(N_DOUBTFUL)
        corrected = cells[cells["corrected"]].sort_values("updated_at", ascending=False).head(N_CORRECTED)
        n_corrected = int(cells["corrected"].sum())

        def conf_caption(row):
            conf = row["confidence"]
            return f"{row['class']} · {'–' if pd.isna(conf) else f'{conf:.2f}'}"

        def fix_caption(row):
            return f"{row['model_label'] or '–'} → {row['class']}"

        image_ids = sorted(set(int(i) for i in cells["image_id"]))
        images = [project.image(i) for i in image_ids]
        packs = _packs(project, image_ids, cells)
        reviewers = _reviewers(project, set(int(i) for i in cells["item_id"]))
        reviewed = int(cells["reviewed"].sum())
        total = len(cells)
        pack_rows = "".join(
            f"<tr><td>{html.escape(p['pack'])}</td><td>{html.escape(p['version'])}</td>"
            f"<td><code>{html.escape(p['sha256'] or 'not recorded')}</code></td><td>{html.escape(p['source'])}</td></tr>"
            for p in packs) or '<tr><td colspan="4">no model calls</td></tr>'
        reviewer_rows = "".join(
            f"<tr><td>{html.escape(str(r['reviewer']))}</td><td class='num'>{r['changes']}</td>"
            f"<td>{html.escape(str(r['first']))}</td><td>{html.escape(str(r['last']))}</td></tr>"
            for r in reviewers.to_dict("records")) or '<tr><td colspan="4">no reviewer has changed a cell yet</td></tr>'
        image_list = "".join(f"<li>{html.escape(Path(im.path).name)} <span class='meta'>({im.kind}, "
                             f"{im.mpp:g} µm/px)</span></li>" for im in images)
        made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        title = f"Case {case_id}" if case_id != NO_CASE else "Images without a case id"
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} – cytoreview report</title>
<style>{_CSS}</style></head><body>
<h1 id="case">{html.escape(title)}</h1>
<p class="meta">Report made {made} by cytoreview {__version__} from project {html.escape(project.folder.name)}.
Synthetic-data models are not for clinical use.</p>
<ul>{image_list}</ul>
<h2>Review progress</h2>
<p id="progress"><progress max="{total}" value="{reviewed}"></progress>
<span id="reviewed">{reviewed}</span> of <span id="total">{total}</span> cells reviewed
({100.0 * reviewed / total:.1f}%), <span id="n-corrected">{n_corrected}</span> corrected.</p>
<h2>Differential</h2>
{_differential_html(table, per)}
<h2>Class distribution (counted cells)</h2>
{_bar_chart_svg(table, colours)}
<h2>Rarest classes</h2>
{_thumbs_html("rare", rare, crops, conf_caption)}
<h2>Most doubtful calls (lowest model confidence)</h2>
{_thumbs_html("doubtful", doubtful, crops, conf_caption)}
<h2>Corrected cells{f" (latest {N_CORRECTED} of {n_corrected})" if n_corrected > N_CORRECTED else ""}</h2>
{_thumbs_html("corrected", corrected, crops, fix_caption)}
<p class="meta">Thumbnails are {crop_um:g} µm wide; a dashed red border and hatching mark crops that reach past
the image edge.</p>
<h2>Model packs</h2>
<table id="packs"><thead><tr><th>pack</th><th>version</th><th>SHA-256 (ONNX)</th><th>from</th></tr></thead>
<tbody>{pack_rows}</tbody></table>
<h2>Reviewers</h2>
<table id="reviewers"><thead><tr><th>reviewer</th><th>changes</th><th>first</th><th>last</th></tr></thead>
<tbody>{reviewer_rows}</tbody></table>
</body></html>
"""
    finally:
        crops.close()


def _writable_target(out: Path) -> Path:
    out = Path(out).expanduser()
    if out.is_dir():
        raise ProjectError(f"report path {out} is a folder; give a file name such as {out / 'report.html'}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ProjectError(f"cannot write the report {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ProjectError(f"cannot write the report {out}: permission denied")
    return out


def write_case_report(project, out, case_id: str | None = None, **options) -> list[Path]:
    """Write the report of ``case_id`` to ``out``; without a case, one page per case with cells.

    With several cases and no ``case_id``, ``out`` names the first and the others get the case key appended to the
    stem (``report-case-2.html``). The page is written to a temporary file beside ``out`` and renamed, so a failed
    write never leaves half a report. ``options`` go to :func:`render_case_report`.

    Returns
    -------
    list of Path
        The pages written.

    Raises
    ------
    ProjectError
        No cells, an unknown case, or a report path that cannot be written (the message names it).
    """
    out = _writable_target(Path(out))
    cases = [case_id] if case_id is not None else report_cases(project)
    if not cases:
        raise ProjectError(f"project {project.folder} holds no cells: nothing to report (run a cell pack with "
                           "`cytoreview predict` and import its store first)")
    pages = [(case, render_case_report(project, case, **options)) for case in cases]
    written = []
    for k, (case, page) in enumerate(pages):
        target = out if k == 0 or case_id is not None else out.with_name(f"{out.stem}-{_safe(case)}{out.suffix}")
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            tmp.write_text(page, encoding="utf-8")
            os.replace(tmp, target)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise ProjectError(f"cannot write the report {target}: {exc.strerror or exc}") from exc
        written.append(target)
    return written


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("._") or "case"
