"""The out-of-distribution warning on a real peripheral blood smear (a neutrophil among red cells, Wright-Giemsa-like
stain), the image the ``cbc`` wheel ships (``cbc-1.1.0.data/data/share/cbc/images/test.jpg``, 1226 x 652 px; read out of
the wheel, never installed, never committed).

``CYTOREVIEW_CBC_WHEEL`` may name a downloaded wheel; otherwise the pinned wheel is fetched once per module with
``pip download --no-deps`` (PyPI only, as CI reaches it), and the tests skip cleanly where it cannot be fetched.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from cytoreview.inference import predict
from cytoreview.inference.ood import assess
from cytoreview.io import open_image
from cytoreview.models import load_pack
from tests.plugins.conftest import PLUGINS
from tests.pypi import downloaded

CBC = "cbc==1.1.0"
MEMBER = "cbc-1.1.0.data/data/share/cbc/images/test.jpg"
#: The smear's real pixel size, from its red cells: about 100 px across for ~7.5 um.
SMEAR_MPP = 0.075


@pytest.fixture(scope="module")
def blood_smear(tmp_path_factory) -> Path:
    """A one-field folder holding the real blood smear."""
    folder = tmp_path_factory.mktemp("cbc-wheel")
    wheel = downloaded(CBC, folder, "cbc-*.whl", env_var="CYTOREVIEW_CBC_WHEEL")
    smear = folder / "smear"
    smear.mkdir()
    with zipfile.ZipFile(wheel) as archive:
        (smear / "field_000.jpg").write_bytes(archive.read(MEMBER))
    return smear


def _report(path: Path, pack_name: str, mpp: float, out: Path):
    pack = load_pack(PLUGINS / pack_name)
    with open_image(path, mpp=mpp) as image:
        store = predict(image, pack, out / f"{pack_name}-{mpp}", threads=1, allow_upsample=True)
        return assess(image, pack, store)


@pytest.mark.parametrize("pack_name", ["warthin-tiles", "effusion-atypia", "node-tumor"])
def test_every_pack_warns_on_the_smear_opened_as_a_field_set(blood_smear, pack_name, tmp_path):
    """A folder of JPEGs without a pixel size opens at the CytoScan 0.293 um/px: every tile pack calls it far."""
    report = _report(blood_smear, pack_name, 0.293, tmp_path)
    assert report.n_tiles > 0 and report.far, report


def test_the_effusion_pack_warns_at_the_smears_real_scale(blood_smear, tmp_path):
    report = _report(blood_smear, "effusion-atypia", SMEAR_MPP, tmp_path)
    assert report.far and report.embedding_score > report.embedding_limit, report
