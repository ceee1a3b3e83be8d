import numpy as np
import pytest
import torch

from wsi_ccrl.ccrl.backbone import PreActResNet18
from wsi_ccrl.ccrl.embed import embed_crops
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.store import CellStore
from wsi_ccrl.label.embed import embed_store, parallel_backbone
from wsi_ccrl.runtime import resolve_device


@pytest.fixture
def backbone():
    torch.manual_seed(0)
    return PreActResNet18("small").eval()


def test_embed_store_streams_into_a_float16_column(small_store_factory, backbone):
    # 12 real cells in chunks of 8, batches of 5: batches and chunks do not line up
    store = CellStore.open(
        small_store_factory("s", patches=("train_10_000",), max_cells=12, chunk_cells=8), "r+"
    )
    store.write_column("embedding", np.zeros((12, 3), np.float16))  # a stale column is replaced
    arr = embed_store(store, backbone, batch_size=5, device="cpu")
    assert arr.shape == (12, 512) and arr.dtype == np.float16
    assert store["embedding"].chunks == (8, 512)
    expected = embed_crops(backbone, store["crops"][:], batch_size=12)
    got = store["embedding"][:].astype(np.float32)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3)
    assert np.isfinite(got).all() and got.std() > 0


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(WsiCcrlError, match="no CUDA GPU"):
            resolve_device("cuda")
    assert not isinstance(
        parallel_backbone(PreActResNet18(), torch.device("cpu")), torch.nn.DataParallel
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_embed_store_on_gpu_matches_cpu_in_bf16(small_store_factory, backbone):
    store = CellStore.open(small_store_factory("g", patches=("train_10_000",), max_cells=30), "r+")
    cpu = embed_crops(backbone, store["crops"][:])
    embed_store(store, backbone, batch_size=16, device="cuda")
    gpu = store["embedding"][:].astype(np.float32)
    assert np.corrcoef(cpu.ravel(), gpu.ravel())[0, 1] > 0.99  # bf16 autocast


def test_embed_store_on_a_cpu_engine_matches_torch(small_store_factory, backbone):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = small_store_factory("e", patches=("train_10_000",), max_cells=12, chunk_cells=8)
    got = {}
    for engine in ("torch", "onnxruntime"):
        store = CellStore.open(path, "r+")
        got[engine] = embed_store(store, backbone, 5, "cpu", engine=engine)[:].astype(np.float32)
    np.testing.assert_allclose(got["onnxruntime"], got["torch"], rtol=2e-3, atol=2e-3)
