"""--device names a device the machine has, or one line says why not (no CUDA machine needed)."""

from __future__ import annotations

import pytest
import torch

from pixdiff.runtime.distributed import DeviceError, check_device, setup


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_cuda_device_is_one_line(no_cuda, name):
    with pytest.raises(DeviceError) as info:
        check_device(name)
    assert str(info.value) == (f"--device {name}: no CUDA device is available (torch 2.13.0 built for CPU); "
                               "use --device cpu")
    assert isinstance(info.value, ValueError)  # what the commands already report as bad input


def test_a_cuda_build_without_a_gpu_says_which_build(no_cuda, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    with pytest.raises(DeviceError, match=r"\(torch 2\.13\.0 built for CUDA 12\.4\); use --device cpu$"):
        check_device("cuda")


@pytest.mark.parametrize("name", [None, "cpu"])
def test_the_cpu_and_the_default_always_pass(no_cuda, name):
    check_device(name)


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_a_device_the_machine_has_passes(two_gpus, name):
    check_device(name)


def test_an_index_past_the_last_device_is_one_line(two_gpus):
    with pytest.raises(DeviceError, match=r"^--device cuda:2: this machine has 2 CUDA devices \(cuda:0 to cuda:1\)$"):
        check_device("cuda:2")


def test_setup_checks_the_device_first(no_cuda, monkeypatch):
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: pytest.fail("CUDA was touched"))
    with pytest.raises(DeviceError, match="no CUDA device"):
        setup("cuda")
    assert setup("cpu").device == torch.device("cpu")
