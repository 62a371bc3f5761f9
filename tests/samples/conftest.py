"""Fixtures for the sample-data tests: small freshly generated cases and the committed copies."""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

from cytoreview._paths import bundled_dir  # noqa: E402


@pytest.fixture(scope="session")
def committed_warthin():
    path = bundled_dir("sample_data") / "warthin_fna"
    assert (path / "cytoscan.json").is_file(), f"committed case missing: {path}"
    return path


@pytest.fixture(scope="session")
def committed_effusion():
    path = bundled_dir("sample_data") / "serous_effusion"
    assert (path / "cytoscan.json").is_file(), f"committed case missing: {path}"
    return path


@pytest.fixture(scope="session")
def fresh_warthin(tmp_path_factory):
    from cytoreview.samples import make_warthin_fields

    return make_warthin_fields(tmp_path_factory.mktemp("warthin"), n_fields=2, seed=0)


@pytest.fixture(scope="session")
def fresh_effusion(tmp_path_factory):
    from cytoreview.samples import make_effusion_fields

    return make_effusion_fields(tmp_path_factory.mktemp("effusion"), n_fields=3, seed=0)


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory):
    import time

    from cytoreview.samples import make_lymph_node_slide

    t0 = time.perf_counter()
    path = make_lymph_node_slide(tmp_path_factory.mktemp("wsi") / "lymph_node.tif", size_px=4096, seed=0)
    return path, time.perf_counter() - t0
