"""The IO-binding run path (used with CUDA) and the CUDA execution provider; CUDA tests skip without a GPU."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from tests.models.onnx_graphs import base_card, classifier_graph, write_pack

from cytoreview.models import load_pack
from cytoreview.models.session import PackSession

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="onnxruntime-gpu with a CUDA device is not available here")


@pytest.fixture
def emb_pack(tmp_path):
    card = base_card("emb", outputs={"probabilities": {"name": "probs"}, "embedding": {"name": "embedding"}})
    return load_pack(write_pack(tmp_path / "emb", card, classifier_graph, embedding=True))


def _patches(n=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def test_io_binding_gives_the_plain_run_bit_for_bit_on_cpu(emb_pack):
    plain = PackSession(emb_pack, threads=1)
    bound = PackSession(emb_pack, threads=1, io_binding=True)
    assert not plain.io_binding and bound.io_binding and bound.device == "cpu"
    a, b = plain.run(_patches()), bound.run(_patches())
    assert a["probs"].tobytes() == b["probs"].tobytes()
    assert a["embedding"].tobytes() == b["embedding"].tobytes()


def test_io_binding_pads_a_fixed_batch_model(tmp_path):
    pack = load_pack(write_pack(tmp_path / "f", base_card("fixed"), classifier_graph, batch=4))
    plain, bound = PackSession(pack, threads=1), PackSession(pack, threads=1, io_binding=True)
    np.testing.assert_array_equal(plain.run(_patches(6))["probs"], bound.run(_patches(6))["probs"])


@needs_cuda
def test_cuda_session_uses_the_gpu_with_io_binding_and_agrees_with_cpu(emb_pack):
    gpu = emb_pack.session(providers="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider" and gpu.device == "cuda" and gpu.io_binding
    cpu = emb_pack.session(providers="cpu")
    got, want = gpu.run(_patches(33)), cpu.run(_patches(33))
    np.testing.assert_allclose(got["probs"], want["probs"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got["probs"].argmax(-1), want["probs"].argmax(-1))


@needs_cuda
def test_predict_on_cuda_matches_cpu(tmp_path, emb_pack):
    from tests.inference.conftest import blob_slide, wsi

    from cytoreview.inference import predict

    slide = wsi(blob_slide(96, 128), path=tmp_path / "slide.tif")
    on_gpu = predict(slide, emb_pack, tmp_path / "gpu", providers="cuda")
    on_cpu = predict(slide, emb_pack, tmp_path / "cpu", providers="cpu")
    assert on_gpu.attrs["providers"][0] == "CUDAExecutionProvider"
    np.testing.assert_array_equal(on_gpu.tile_class[:], on_cpu.tile_class[:])
