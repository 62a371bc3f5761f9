"""Differential counts: cells per class, per image or per case, as counts and as a rate per N counted cells.

A differential is what a haematology analyser or a body-fluid count reports: of the cells that count (the
*denominator*, e.g. the white cells), what share is each class ("per 100 white cells"). The rules:

* only cell items count (``level == "cell"``), with their current label (the model's call until a reviewer changed
  it, or only reviewed cells with ``only_reviewed``);
* classes in ``excluded`` -- by default "unsure", "not classed" and "not a cell" -- are listed with their count but
  are never in the denominator and get no rate: an object a reviewer set aside is not a cell of the count;
* an unreviewed model call whose confidence is below ``unidentified_below`` is counted as :data:`UNIDENTIFIED`
  (excluded too, until a reviewer classes it), as an analyser's "unidentified" group;
* ``counted`` names the classes of the denominator (default: every other class); a class outside it that is not
  excluded (nucleated red cells next to a white-cell count) still gets ``per_denominator``, as analysers report it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from cytoreview.class_names import name_key
from cytoreview.errors import ProjectError

#: Class a reviewer gives a cell that is not part of the count (a smudge, an artefact): excluded.
NOT_CLASSED = "not classed"
#: Group of unreviewed model calls below the confidence threshold.
UNIDENTIFIED = "unidentified"
#: Label of a cell without any label (no model call, never reviewed).
UNLABELLED = "unlabelled"
#: Classes kept out of the denominator unless told otherwise.
EXCLUDED_BY_DEFAULT = ("unsure", NOT_CLASSED, "not a cell", UNIDENTIFIED, UNLABELLED)
#: Columns of :func:`differential`.
DIFFERENTIAL_COLUMNS = ["group", "class", "count", "in_denominator", "denominator", "percent", "per_denominator"]


def cell_table(project, *, case_id: str | None = None, image_id: int | None = None, only_reviewed: bool = False,
               unidentified_below: float | None = None) -> pd.DataFrame:
    """The project's cell items with the class each one is counted as.

    Returns the rows of :meth:`Project.label_table` for ``level == "cell"`` (of one case or image when given) plus
    ``class``: the current label's class name, :data:`UNIDENTIFIED` for an unreviewed call whose confidence is below
    ``unidentified_below``, or :data:`UNLABELLED`.
    """
    table = project.label_table(only_reviewed=only_reviewed)
    cells = table[table["level"] == "cell"]
    if case_id is not None:
        cells = cells[cells["case_id"].map(case_key) == case_id]
    if image_id is not None:
        cells = cells[cells["image_id"] == int(image_id)]
    cells = cells.copy()
    names = [labels[0] if labels else UNLABELLED for labels in cells["labels"]]
    if unidentified_below is not None:
        doubtful = (~cells["reviewed"].to_numpy()) & (cells["confidence"].to_numpy() < float(unidentified_below))
        names = [UNIDENTIFIED if d else n for n, d in zip(names, doubtful)]
    cells["class"] = pd.Series(names, index=cells.index, dtype=object)
    return cells


#: Case key of images added without a case id.
NO_CASE = "(no case)"


def case_key(case_id) -> str:
    """The case a cell is counted under: its image's case id, or :data:`NO_CASE`."""
    return case_id if isinstance(case_id, str) and case_id else NO_CASE


def _group_keys(cells: pd.DataFrame, by: str) -> pd.Series:
    if by == "case":
        return cells["case_id"].map(case_key)
    if by == "image":
        return cells["image_path"].map(lambda p: str(p))
    if by == "project":
        return pd.Series("all", index=cells.index, dtype=object)
    raise ProjectError(f"differential by {by!r}: expected 'image', 'case' or 'project'")


def differential(project, *, by: str = "case", case_id: str | None = None, counted: Iterable[str] | None = None,
                 excluded: Iterable[str] = EXCLUDED_BY_DEFAULT, per: float = 100.0, only_reviewed: bool = False,
                 unidentified_below: float | None = None) -> pd.DataFrame:
    """Counts and rates per class, per case (or image, or the whole project).

    Parameters
    ----------
    project : Project
    by : {"case", "image", "project"}
        One differential per case id, per image (path), or one for everything.
    case_id : str, optional
        Only this case.
    counted : iterable of str, optional
        Class names in the denominator (case-insensitive); default every class that is not ``excluded``.
    excluded : iterable of str
        Class names never counted (see the module docstring).
    per : float
        Rate base: ``per_denominator = count / denominator * per`` (100 gives "per 100 white cells").
    only_reviewed : bool
        Count reviewed cells only.
    unidentified_below : float, optional
        Unreviewed model calls below this confidence count as :data:`UNIDENTIFIED`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`DIFFERENTIAL_COLUMNS`, one row per group and class present (classes of the denominator
        first, by count): ``percent`` is the share of the denominator (NaN outside it), ``per_denominator`` the rate
        per ``per`` counted cells (NaN for excluded classes). Empty when the project holds no cells.

    Raises
    ------
    ProjectError
        ``by`` is unknown, ``per`` is not positive, a ``counted`` class is not in the project's schema, or the
        selected case has no cells.
    """
    cells = cell_table(project, case_id=case_id, only_reviewed=only_reviewed, unidentified_below=unidentified_below)
    if cells.empty and case_id is not None:
        raise ProjectError(f"case {case_id!r} has no cells in project {project.folder}")
    return differential_of(cells, project.schema, by=by, counted=counted, excluded=excluded, per=per)


def differential_of(cells: pd.DataFrame, schema, *, by: str = "case", counted: Iterable[str] | None = None,
                    excluded: Iterable[str] = EXCLUDED_BY_DEFAULT, per: float = 100.0) -> pd.DataFrame:
    """:func:`differential` of a table of cells already read (columns ``class``, and ``case_id`` / ``image_path``
    for ``by="case"`` / ``"image"``; an optional ``n_cells`` column makes each row stand for that many cells, so
    a caller may count in advance), e.g. the gallery's cells kept up to date in memory; ``schema`` is the project's
    (for the ``counted`` check). Same rules, columns and errors as :func:`differential`."""
    if not (isinstance(per, (int, float)) and np.isfinite(per) and per > 0):
        raise ProjectError(f"differential per {per!r}: must be a positive number of cells")
    excluded_keys = {name_key(name) for name in excluded}
    counted_keys = None
    if counted is not None:
        counted_keys = {name_key(name) for name in counted}
        known = {name_key(c.name) for c in schema.classes}
        unknown = sorted(counted_keys - known)
        if unknown:
            raise ProjectError(f"differential: counted class(es) {', '.join(unknown)} not in the project's classes "
                               f"({', '.join(sorted(c.name for c in schema.classes)) or 'none'})")
        if counted_keys & excluded_keys:
            raise ProjectError(f"differential: {', '.join(sorted(counted_keys & excluded_keys))} is both counted "
                               "and excluded")
    if cells.empty:
        return pd.DataFrame(columns=DIFFERENTIAL_COLUMNS)
    cells = cells.assign(group=_group_keys(cells, by))
    rows = []
    for group, part in cells.groupby("group", sort=True):
        if "n_cells" in part:
            counts = part.groupby("class", sort=False)["n_cells"].sum()
            counts = counts[counts > 0].sort_values(ascending=False, kind="stable")
        else:
            counts = part["class"].value_counts()
        key = counts.index.map(name_key)
        in_denominator = ~key.isin(excluded_keys) if counted_keys is None else key.isin(counted_keys)
        denominator = int(counts[in_denominator].sum())
        ordered = sorted(zip(counts.index, counts.to_numpy(), in_denominator, key),
                         key=lambda t: (not t[2], -t[1], str(t[0])))
        for name, count, inside, k in ordered:
            share = 100.0 * count / denominator if inside and denominator else np.nan
            rate = per * count / denominator if denominator and k not in excluded_keys else np.nan
            rows.append((group, name, int(count), bool(inside), denominator, share, rate))
    return pd.DataFrame(rows, columns=DIFFERENTIAL_COLUMNS)


def format_differential(table: pd.DataFrame, per: float = 100.0) -> str:
    """A plain-text rendering of :func:`differential` (one block per group), for the command line."""
    if table.empty:
        return "no cells in this project (run a cell pack with `cytoreview predict`, then import its store)"
    lines = []
    per_label = f"per {per:g}"
    for group, part in table.groupby("group", sort=False):
        denominator = int(part["denominator"].iloc[0])
        lines.append(f"{group}: {denominator} cells counted")
        lines.append(f"  {'class':28s} {'count':>7s} {'%':>7s} {per_label:>9s}")
        for row in part.to_dict("records"):
            pct = "-" if np.isnan(row["percent"]) else f"{row['percent']:.1f}"
            rate = "-" if np.isnan(row["per_denominator"]) else f"{row['per_denominator']:.1f}"
            mark = "" if row["in_denominator"] else ("  (not counted)" if rate != "-" else "  (excluded)")
            lines.append(f"  {str(row['class']):28s} {row['count']:7d} {pct:>7s} {rate:>9s}{mark}")
    return "\n".join(lines)
