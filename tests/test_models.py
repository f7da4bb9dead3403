"""Tests for src/models: the SBI teacher conversion, strict loading and the student's ImageNet weights."""
import logging
import math
import os
import time

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from torch import nn

from src.common.config import Config
from src.models.networks import (
    build_student,
    convert_sbi_state_dict,
    count_params,
    create_classifier,
    load_checkpoint_model,
    load_teacher,
)

TINY = "mobilevitv2_050"


class _SbiWrapper(nn.Module):
    """The SBI training code's wrapper: an efficientnet_pytorch model as attribute `net`."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net


def _smooth_images(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Random smooth RGB images in [0, 1]: unlike pixel noise, their pooled features differ between images."""
    return F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode="bilinear", align_corners=False)


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics, so that a wrong key mapping cannot give equal outputs by accident.

    Weights are fan-in scaled and the BN running statistics are then measured on random images (one train-mode
    pass), so that the activations neither vanish nor explode through the depth and the logits depend on the input.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and t.ndim > 1:  # conv / linear weights
                t.copy_(torch.randn(t.shape, generator=g) * math.sqrt(t.shape[0] / t.numel()))
            elif t.is_floating_point():  # biases, BN affine (around 1 for weights)
                t.copy_(torch.randn(t.shape, generator=g) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the calibration pass
        model.train()(_smooth_images(4, 128, g))
    return model.eval()


@pytest.fixture(scope="module")
def sbi_net() -> nn.Module:
    efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")
    net = efficientnet_pytorch.EfficientNet.from_name("efficientnet-b4", num_classes=2)  # image size 380
    net.set_swish(memory_efficient=False)
    return _randomise(net)


def _save_sbi(net: nn.Module, path, drop: str | None = None, extra: str | None = None):
    sd = _SbiWrapper(net).state_dict()
    if drop:
        del sd[drop]
    if extra:
        sd[extra] = torch.zeros(3)
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "rho": 0.05}]}, "epoch": 3}, path)
    return path


def _save_own(model: nn.Module, arch: str, path):
    torch.save({"model": model.state_dict(), "arch": arch, "epoch": 4, "val_auc": 0.9, "config": {"model": arch}}, path)
    return path


def test_sbi_checkpoint_gives_same_logits(sbi_net, tmp_path):
    teacher = load_teacher(_save_sbi(sbi_net, tmp_path / "FFc23.tar"))
    x = _smooth_images(2, 380, torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = sbi_net(x), teacher(x)
    assert got.shape == (2, 2) and (expected[0] - expected[1]).abs().max() > 1e-2  # logits depend on the input
    assert (got - expected).abs().max().item() < 1e-4
    assert not teacher.training and all(not m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())


def test_convert_sbi_state_dict_covers_timm_b4_exactly(sbi_net):
    converted = convert_sbi_state_dict(_SbiWrapper(sbi_net).state_dict())
    assert sorted(converted) == sorted(timm.create_model("tf_efficientnet_b4", num_classes=2).state_dict())
    assert "blocks.0.1.conv_pw.weight" in converted and "blocks.6.1.conv_pwl.weight" in converted


def test_corrupted_sbi_checkpoint_names_counts_and_keys(sbi_net, tmp_path):
    path = _save_sbi(sbi_net, tmp_path / "bad.tar", drop="net._blocks.5._bn1.running_var", extra="net._bogus.weight")
    with pytest.raises(ValueError) as e:
        load_teacher(path)
    msg = str(e.value)
    assert "1 missing, 1 unexpected" in msg and "SBI" in msg and str(path) in msg
    assert "blocks.1.3.bn2.running_var" in msg and "net._bogus.weight" in msg


def test_own_checkpoint_round_trips(tmp_path):
    model = _randomise(create_classifier(TINY))
    path = _save_own(model, TINY, tmp_path / "ckpt.pth")
    x = torch.rand(1, 3, 64, 64)
    teacher = load_teacher(path, arch="tf_efficientnet_b4")  # the checkpoint's own arch wins
    loaded, ckpt = load_checkpoint_model(path)
    assert ckpt["epoch"] == 4 and ckpt["arch"] == TINY
    assert all(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        assert torch.equal(teacher(x), model(x)) and torch.equal(loaded.eval()(x), model(x))


def test_plain_timm_state_dict_is_a_teacher(tmp_path):
    model = _randomise(create_classifier(TINY))
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    with torch.no_grad():
        x = torch.rand(1, 3, 64, 64)
        assert torch.equal(load_teacher(tmp_path / "plain.pth", arch=TINY)(x), model(x))
    with pytest.raises(ValueError, match=r"missing.*unexpected"):
        load_teacher(tmp_path / "plain.pth", arch="tf_efficientnet_b0")


def test_wrong_files_give_clear_errors(sbi_net, tmp_path):
    torch.save({"foo": 1, "bar": [1, 2]}, tmp_path / "random.pth")
    with pytest.raises(ValueError, match=r"no known format.*'foo', 'bar'"):
        load_teacher(tmp_path / "random.pth")
    with pytest.raises(ValueError, match="not a checkpoint of this project.*teacher_weights"):
        load_checkpoint_model(tmp_path / "random.pth")
    with pytest.raises(ValueError, match="not a checkpoint of this project"):
        load_checkpoint_model(_save_sbi(sbi_net, tmp_path / "FFc23.tar"))
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "pickled_module.pth")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint.*other pickled objects are refused"):
        load_teacher(tmp_path / "pickled_module.pth")
    (tmp_path / "noise.pth").write_bytes(np.random.default_rng(0).bytes(5000))  # once: KeyError 227 from the unpickler
    with pytest.raises(ValueError, match="noise.pth is not a readable PyTorch checkpoint"):
        load_teacher(tmp_path / "noise.pth")
    with pytest.raises(FileNotFoundError, match="nothing_here.tar"):
        load_teacher(tmp_path / "nothing_here.tar")


def test_teacher_glob_uses_newest_file(tmp_path):
    old, new = create_classifier(TINY), _randomise(create_classifier(TINY), seed=1)
    _save_own(old, TINY, tmp_path / "ckpt_a.pth")
    _save_own(new, TINY, tmp_path / "ckpt_b.pth")
    os.utime(tmp_path / "ckpt_a.pth", (time.time() + 60,) * 2)  # a is the newer one
    os.utime(tmp_path / "ckpt_b.pth", (time.time() - 60,) * 2)
    teacher = load_teacher(str(tmp_path / "ckpt_*.pth"))
    assert all(torch.equal(v, old.state_dict()[k]) for k, v in teacher.state_dict().items())


def _imagenet_weights(tmp_path, arch: str = TINY, suffix: str = ".safetensors"):
    sd = _randomise(timm.create_model(arch, pretrained=False, num_classes=1000)).state_dict()
    path = tmp_path / f"{arch}{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(sd, str(path))
    else:
        torch.save({"state_dict": sd}, path)
    return sd, path


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_student_loads_backbone_and_resets_classifier(tmp_path, caplog, suffix):
    saved, path = _imagenet_weights(tmp_path, suffix=suffix)
    with caplog.at_level(logging.INFO, logger="src.models.networks"):
        student = build_student(Config(model=TINY, student_imagenet_weights=str(path)))
    sd = student.state_dict()
    assert sd["head.fc.weight"].shape[0] == 2 and sd["head.fc.bias"].shape == (2,)
    backbone = [k for k in sd if not k.startswith("head.fc.")]
    assert backbone and all(torch.equal(sd[k], saved[k]) for k in backbone)
    assert "only the classifier" in caplog.text and str(path) in caplog.text


def test_student_rejects_weights_of_another_arch(tmp_path):
    _, path = _imagenet_weights(tmp_path, arch="mobilevitv2_075")
    pattern = r"(?s)\d+ missing, \d+ unexpected, [1-9]\d* shape-mismatched.*stages\.0\.0.*wrong architecture"
    with pytest.raises(ValueError, match=pattern):
        build_student(Config(model=TINY, student_imagenet_weights=str(path)))
    torch.save({"epoch": 1, "arch": TINY}, tmp_path / "no_weights.pth")
    with pytest.raises(ValueError, match="holds no state dict.*'epoch', 'arch'"):
        build_student(Config(model=TINY, student_imagenet_weights=str(tmp_path / "no_weights.pth")))


def test_student_without_weights_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="src.models.networks"):
        student = build_student(Config(model=TINY, student_imagenet_weights=None))
    assert "NO ImageNet weights" in caplog.text
    assert count_params(student) > 0


def test_student_missing_file_names_key_and_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="student_imagenet_weights.*absent.safetensors"):
        build_student(Config(model=TINY, student_imagenet_weights=str(tmp_path / "absent.safetensors")))


def test_unknown_arch_suggests_close_names():
    with pytest.raises(ValueError, match="unknown timm architecture 'mobilevitv2_20'.*mobilevitv2_200"):
        create_classifier("mobilevitv2_20")
