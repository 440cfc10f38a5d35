"""lmt.device on a machine without CUDA, NPU or MPS: clear bilingual errors, torch_npu never breaking imports,
the CPU thread setting, bf16 refusals, and the CUDA switches (TF32, bf16 by compute capability) via monkeypatch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from lmt import device as lmt_device
from lmt.errors import InvalidInputError, MissingDependencyError, UnsupportedDeviceError

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def _broken_torch_npu(folder):
    """A torch_npu package that fails on import the way it does without the CANN toolkit."""
    package = folder / "torch_npu"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise OSError('libhccl.so: cannot open shared object file: No such file or directory')\n"
    )
    return folder


@pytest.fixture
def fresh_npu_cache():
    lmt_device.npu_available.cache_clear()
    yield
    lmt_device.npu_available.cache_clear()


def _assert_bilingual(error: UnsupportedDeviceError | MissingDependencyError, *english: str) -> None:
    assert all(part in str(error) for part in english), str(error)
    assert error.message_zh != error.message
    assert any("\u4e00" <= ch <= "\u9fff" for ch in error.message_zh)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cuda_absent_is_a_clear_error():
    with pytest.raises(UnsupportedDeviceError) as caught:
        lmt_device.resolve_device("cuda:0")
    _assert_bilingual(caught.value, "not available", "CUDA build of torch", "device='cpu'")


@pytest.mark.skipif(HAS_MPS, reason="this machine has MPS")
def test_mps_absent_is_a_clear_error():
    with pytest.raises(UnsupportedDeviceError) as caught:
        lmt_device.resolve_device("mps")
    _assert_bilingual(caught.value, "Apple silicon")


def test_npu_absent_is_a_clear_error(fresh_npu_cache, monkeypatch):
    monkeypatch.setattr(lmt_device, "_torch_npu_installed", lambda: False)
    assert lmt_device.npu_available() is False
    with pytest.raises(UnsupportedDeviceError) as caught:
        lmt_device.resolve_device("npu")
    _assert_bilingual(caught.value, "torch-npu", "CANN")
    with pytest.raises(MissingDependencyError) as missing:
        lmt_device.import_torch_npu()
    _assert_bilingual(missing.value, "large-model-tutorial[npu]")


def test_broken_torch_npu_is_reported_not_raised(tmp_path, monkeypatch, fresh_npu_cache):
    """torch_npu installed without CANN: npu_available() is False, import_torch_npu() names the fix."""
    monkeypatch.syspath_prepend(str(_broken_torch_npu(tmp_path)))
    monkeypatch.delitem(sys.modules, "torch_npu", raising=False)
    assert lmt_device.npu_available() is False
    with pytest.raises(UnsupportedDeviceError) as caught:
        lmt_device.import_torch_npu()
    _assert_bilingual(caught.value, "cannot load", "OSError", "set_env.sh")
    with pytest.raises(UnsupportedDeviceError) as resolved:
        lmt_device.resolve_device("npu")
    assert "installed but sees no NPU" in str(resolved.value)


def test_a_broken_torch_npu_breaks_neither_torch_nor_lmt(tmp_path):
    """In a fresh interpreter with the broken package on the path: import torch, lmt and lmt env all work."""
    code = textwrap.dedent(
        """
        import sys
        import torch, lmt
        from lmt.device import available_devices, resolve_device
        from lmt.env import environment_report
        assert "torch_npu" not in sys.modules, "importing lmt must not import torch_npu"
        assert "npu" not in available_devices()
        assert resolve_device().type == "cpu"
        report = environment_report()
        print(report["npu"]["status"])
        """
    )
    folder = _broken_torch_npu(tmp_path)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(folder), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("installed but unusable: OSError")


def test_set_threads_applies_and_returns_the_previous_count():
    before = torch.get_num_threads()
    try:
        assert lmt_device.set_threads(1) == before
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in (0, -2, 1.5, "2", True, None):
        with pytest.raises(InvalidInputError):
            lmt_device.set_threads(bad)
    assert torch.get_num_threads() == before


def test_bf16_on_a_cpu_without_fast_bf16_is_refused(monkeypatch):
    import lmt.env

    cpu = torch.device("cpu")
    monkeypatch.setattr(lmt.env, "cpu_has_fast_bf16", lambda: False)
    with pytest.raises(UnsupportedDeviceError) as caught:
        lmt_device.resolve_dtype(cpu, "bf16")
    _assert_bilingual(caught.value, "300x", "float32")
    monkeypatch.setattr(lmt.env, "cpu_has_fast_bf16", lambda: True)
    assert lmt_device.resolve_dtype(cpu, "bfloat16") == torch.bfloat16
    with pytest.raises(UnsupportedDeviceError, match="float16 on a CPU"):
        lmt_device.resolve_dtype(cpu, "fp16")


@pytest.mark.parametrize(("capability", "allowed"), [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_cuda_bf16_needs_ampere(monkeypatch, capability, allowed):
    """No GPU needed: the capability check is what decides, so it is patched."""
    monkeypatch.setattr(lmt_device, "_cuda_capability", lambda device: capability)
    cuda = torch.device("cuda")
    assert lmt_device.resolve_dtype(cuda) == torch.float16  # the default on a GPU
    if allowed:
        assert lmt_device.resolve_dtype(cuda, "bf16") == torch.bfloat16
    else:
        with pytest.raises(UnsupportedDeviceError) as caught:
            lmt_device.resolve_dtype(cuda, "bf16")
        _assert_bilingual(caught.value, "7.5", "float16")


def test_tf32_switches_set_and_restore():
    """torch's fp32_precision switches exist on CPU builds too; set_tf32 writes both and tf32_state reads them."""
    before = lmt_device.tf32_state()
    try:
        lmt_device.set_tf32(True)
        assert lmt_device.tf32_state() == {"matmul": "tf32", "cudnn_conv": "tf32"}
        lmt_device.set_tf32(False)
        assert lmt_device.tf32_state() == {"matmul": "ieee", "cudnn_conv": "ieee"}
    finally:
        torch.backends.cuda.matmul.fp32_precision = before["matmul"]
        torch.backends.cudnn.conv.fp32_precision = before["cudnn_conv"]
    with pytest.raises(InvalidInputError):
        lmt_device.set_tf32("yes")


def test_synchronize_and_peak_memory_are_no_ops_on_cpu():
    cpu = torch.device("cpu")
    lmt_device.synchronize(cpu)
    lmt_device.reset_peak_memory(cpu)
    assert lmt_device.peak_memory_bytes(cpu) is None


def test_cuda_path_synchronises_and_reads_peak_memory(monkeypatch):
    """The CUDA branch, with torch.cuda's calls recorded instead of run."""
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: calls.append("sync"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 123)
    cuda = torch.device("cuda")
    lmt_device.synchronize(cuda)
    lmt_device.reset_peak_memory(cuda)
    assert lmt_device.peak_memory_bytes(cuda) == 123
    assert calls == ["sync", "reset"]


def test_environment_report_shows_tf32_cann_and_int8_features():
    from lmt.env import cpu_has_fast_int8, environment_report

    report = environment_report()
    assert report["cuda"]["tf32"] == lmt_device.tf32_state()
    assert set(report["npu"]["cann"]) == {"home", "version"}
    assert report["cpu"]["fast_int8"] == cpu_has_fast_int8()
    assert {"mkldnn", "openmp"} <= set(report["torch"])
    assert {"OMP_NUM_THREADS", "LMT_DEVICE"} <= set(report["env"])
