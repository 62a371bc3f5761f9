"""The HTML case report, rendered by a real headless Chromium: it renders, and its table matches the project."""

from __future__ import annotations

import os
import shutil
import subprocess
from io import StringIO

import numpy as np
import pandas as pd
import pytest

import cytoreview.cli
from cytoreview.errors import ProjectError
from cytoreview.review import UNSURE, Project
from cytoreview.review.differential import differential
from cytoreview.review.report import write_case_report

from .cell_project import make_cell_project

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/setup installs it)")


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium with its own profile folder (never the user's)."""
    profile = tmp_path / "chromium-profile"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def reviewed_project(tmp_path):
    project = make_cell_project(tmp_path)
    cells = project.items(level="cell")
    first = cells[cells["image_id"] == 1]["item_id"].tolist()
    macrophage = project.schema.by_name("macrophage").id
    for item in first[:6]:
        project.set_label(item, [macrophage], "dr-a")
    for item in first[6:12]:
        project.accept(item, "dr-b")
    project.set_label(first[12], [UNSURE], "dr-b")
    yield project
    project.close()


@needs_chromium
def test_report_renders_in_chromium_and_its_table_matches_the_project(reviewed_project, tmp_path):
    out = tmp_path / "report.html"
    assert write_case_report(reviewed_project, out, case_id="case-1") == [out]
    dom = chromium(tmp_path, "--dump-dom", out.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    table = pd.read_html(StringIO(html), attrs={"id": "differential"})[0]
    body = table.iloc[:-1]  # the last row is the footer (counted cells)
    expected = differential(reviewed_project, case_id="case-1")
    assert list(body["class"]) == list(expected["class"])
    assert list(body["count"].astype(int)) == list(expected["count"])
    shown = pd.to_numeric(body["%"], errors="coerce").to_numpy(float)
    np.testing.assert_allclose(shown, expected["percent"].round(1).to_numpy(float), equal_nan=True, atol=0.051)
    assert int(table.iloc[-1]["count"]) == int(expected["denominator"].iloc[0])
    # progress, corrected cells, reviewers and the pack are what the project says
    cells = reviewed_project.items(level="cell")
    n_cells = int((cells["image_id"] == 1).sum())
    assert f'<span id="reviewed">13</span> of <span id="total">{n_cells}</span>' in html
    corrected = pd.read_html(StringIO(html), attrs={"id": "reviewers"})[0]
    assert set(corrected["reviewer"]) == {"dr-a", "dr-b"}
    assert dict(zip(corrected["reviewer"], corrected["changes"])) == {"dr-a": 6, "dr-b": 7}
    packs = pd.read_html(StringIO(html), attrs={"id": "packs"})[0]
    assert list(packs["pack"]) == ["toy-cells"] and str(packs["version"][0]) == "1.0.0"
    # one thumbnail per corrected cell (model call differed), each an inline PNG; the bar chart is inline SVG
    changed = int(reviewed_project.label_table().query("corrected and image_id == 1").shape[0])
    assert html.count('<figure data-item=') >= changed and html.count("data:image/png;base64,") >= changed
    corrected_section = html.split('id="corrected"')[1].split("</div>")[0]
    assert corrected_section.count("<figure") == changed
    assert html.count('class="bar"') == int(expected["in_denominator"].sum())
    assert 'class="padded"' in html  # the fixture's edge cells are padded and marked, not dropped
    assert "src=\"http" not in html and "href=\"http" not in html  # self-contained


@needs_chromium
def test_report_screenshot(reviewed_project, tmp_path):
    out = tmp_path / "report.html"
    write_case_report(reviewed_project, out, case_id="case-1")
    png = tmp_path / "report.png"
    shot = chromium(tmp_path, "--window-size=1200,2000", f"--screenshot={png}", out.as_uri())
    assert shot.returncode == 0 and png.stat().st_size > 50_000, shot.stderr[-2000:]
    from PIL import Image as PILImage

    pixels = np.asarray(PILImage.open(png).convert("RGB"))
    # the bars of the class plot are drawn in the classes' colours (neutrophil #e69f00, lymphocyte #0072b2)
    for colour in ((0xE6, 0x9F, 0x00), (0x00, 0x72, 0xB2)):
        assert (np.abs(pixels.astype(int) - colour).sum(axis=-1) < 10).sum() > 500


def test_one_page_per_case_and_the_cli(reviewed_project, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert cytoreview.cli.main(["report", str(reviewed_project.folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out), str(tmp_path / "r-case-2.html")]
    assert "Case case-2" in (tmp_path / "r-case-2.html").read_text()


def test_unwritable_report_path_is_a_clear_error(reviewed_project, tmp_path, capsys):
    with pytest.raises(ProjectError, match="does not exist"):
        write_case_report(reviewed_project, tmp_path / "no" / "such" / "r.html", case_id="case-1")
    with pytest.raises(ProjectError, match="is a folder"):
        write_case_report(reviewed_project, tmp_path, case_id="case-1")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores the mode: make the target itself a folder instead
            (locked / "r.html").mkdir()
        code = cytoreview.cli.main(["report", str(reviewed_project.folder), "--case", "case-1", "--out",
                                    str(locked / "r.html")])
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "r.html" in err[0]
    assert not any(p.name.endswith(".tmp") for p in locked.iterdir())


def test_project_without_cells_gets_a_clear_message(tmp_path, capsys):
    with Project.open(tmp_path / "empty", create=True) as project:
        with pytest.raises(ProjectError, match="holds no cells"):
            write_case_report(project, tmp_path / "r.html")
    assert cytoreview.cli.main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")]) == 2
    assert "holds no cells" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_unknown_case(reviewed_project, tmp_path):
    with pytest.raises(ProjectError, match="case 'case-9' has no cells.*case-1, case-2"):
        write_case_report(reviewed_project, tmp_path / "r.html", case_id="case-9")
