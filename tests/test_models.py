"""Tests of semscale.models: parameter counts, shapes, the feature/classifier split, the cosine head."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from semscale.models import (
    MODELS,
    NormedLinear,
    ResNet32,
    build_model,
    resnet32_param_count,
)

FEATURE_DIM = {"resnet32": 64, "resnet18": 512, "resnet34": 512, "resnet50": 2048, "vgg16": 512, "vgg19": 512, "cnn": 128}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------------
# ResNet-32


def test_resnet32_parameter_count_from_first_principles():
    C = 10
    conv = lambda i, o: 3 * 3 * i * o  # noqa: E731  (no bias)
    bn = lambda c: 2 * c  # noqa: E731      (γ, β)
    stem = conv(3, 16) + bn(16)  # 432 + 32
    stage1 = 5 * (2 * conv(16, 16) + 2 * bn(16))  # 5 · 4,672
    stage2 = (conv(16, 32) + conv(32, 32) + 2 * bn(32)) + 4 * (2 * conv(32, 32) + 2 * bn(32))
    stage3 = (conv(32, 64) + conv(64, 64) + 2 * bn(64)) + 4 * (2 * conv(64, 64) + 2 * bn(64))
    head = 64 * C + C
    expected = stem + stage1 + stage2 + stage3 + head
    assert (stem, stage1, stage2, stage3) == (464, 23_360, 88_192, 351_488)
    assert expected == 464_154
    model = build_model("resnet32", C)
    assert n_params(model) == expected == resnet32_param_count(C)
    assert 455_000 <= n_params(model) <= 470_000  # the published 0.46 M
    # option-A shortcuts have no parameters; the cosine head has no bias
    assert n_params(build_model("resnet32", C, normed_classifier=True)) == expected - C
    assert n_params(build_model("resnet32", 100)) == resnet32_param_count(100) == 463_504 + 6_500
    assert n_params(build_model("resnet32", 10, in_channels=1)) == resnet32_param_count(10, in_channels=1)


def test_resnet32_structure():
    m = build_model("resnet32", 10)
    assert isinstance(m, ResNet32)
    blocks = [b for layer in (m.layer1, m.layer2, m.layer3) for b in layer]
    assert len(blocks) == 15
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) == 31  # + the linear head = 32 weighted layers
    assert [layer[0].conv1.out_channels for layer in (m.layer1, m.layer2, m.layer3)] == [16, 32, 64]
    assert [layer[0].conv1.stride for layer in (m.layer1, m.layer2, m.layer3)] == [(1, 1), (2, 2), (2, 2)]


def test_option_a_shortcut_subsamples_and_zero_pads():
    m = build_model("resnet32", 10)
    sc = m.layer2[0].shortcut
    x = torch.randn(2, 16, 8, 8)
    out = sc(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, :8]) == 0 and torch.count_nonzero(out[:, 24:]) == 0
    assert isinstance(m.layer1[0].shortcut, nn.Identity)


def test_resnet32_kaiming_init():
    torch.manual_seed(0)
    m = build_model("resnet32", 10)
    w = m.layer3[1].conv1.weight  # fan_in = 64 · 9, kaiming_normal std = sqrt(2 / fan_in)
    std = (2 / (64 * 9)) ** 0.5
    assert abs(w.std().item() - std) < 0.05 * std  # 36,864 draws: the estimate is within ~1 %


# ---------------------------------------------------------------------------------------------
# shapes, features, classifier


CASES = [
    ("resnet32", 3, 32), ("resnet32", 1, 28), ("resnet32", 1, 32), ("resnet32", 3, 64),
    ("resnet18", 3, 32), ("resnet18", 1, 28), ("resnet18", 3, 64),
    ("resnet34", 3, 32), ("resnet34", 1, 32), ("resnet50", 3, 32), ("resnet50", 1, 28),
    ("vgg16", 3, 32), ("vgg16", 1, 28), ("vgg19", 3, 32), ("vgg19", 3, 64),
    ("cnn", 1, 28), ("cnn", 3, 32), ("cnn", 1, 64), ("cnn", 3, 28),
]


@pytest.mark.parametrize("name,channels,size", CASES)
def test_shapes_features_and_forward(name, channels, size):
    torch.manual_seed(0)
    m = build_model(name, 7, in_channels=channels).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        logits = m(x)
        feats = m.features(x)
        logits2, feats2 = m.forward_with_features(x)
        via_classifier = m.classifier(feats)
    assert logits.shape == (2, 7)
    assert feats.shape == (2, FEATURE_DIM[name]) and m.feature_dim == FEATURE_DIM[name]
    torch.testing.assert_close(logits, via_classifier)
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(feats2, feats)


def test_torchvision_stem():
    for name in ("resnet18", "resnet34"):
        m = build_model(name, 10, in_channels=1)
        conv1 = m.backbone.conv1
        assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and conv1.in_channels == 1
        assert isinstance(m.backbone.maxpool, nn.Identity)
        assert isinstance(m.backbone.fc, nn.Identity)
        assert isinstance(m.classifier, nn.Linear) and m.classifier.in_features == 512
    # torchvision's block layout is kept
    assert [len(getattr(build_model("resnet34", 10).backbone, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]


# kuangliu/pytorch-cifar models/vgg.py lines 7-12: channels per conv, "M" a 2×2 max-pool
VGG_CFG = {16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
           19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]}


@pytest.mark.parametrize("depth", [16, 19])
def test_vgg_layout_and_parameter_count_from_its_cfg(depth):
    m = build_model(f"vgg{depth}", 10, in_channels=1)
    convs = [l for l in m.modules() if isinstance(l, nn.Conv2d)]
    pools = [l for l in m.modules() if isinstance(l, nn.MaxPool2d)]
    assert [c.out_channels for c in convs] == [c for c in VGG_CFG[depth] if c != "M"]
    assert convs[0].in_channels == 1 and len(pools) == 5 and all(p.ceil_mode for p in pools)
    # conv 3×3 with bias, BN (weight, bias), linear head 512 -> 10
    expected, c_in = 0, 1
    for c in VGG_CFG[depth]:
        if c != "M":
            expected += 9 * c_in * c + c + 2 * c
            c_in = c
    assert n_params(m) == expected + 512 * 10 + 10
    # 28×28 reaches 1×1 before the average pool, as 32×32 does
    with torch.no_grad():
        assert m.body[0](torch.zeros(1, 1, 28, 28)).shape[-2:] == (1, 1)


def test_resnet50_keeps_torchvisions_bottlenecks():
    m = build_model("resnet50", 10, in_channels=1)
    assert [len(getattr(m.backbone, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert m.backbone.conv1.kernel_size == (3, 3) and isinstance(m.backbone.maxpool, nn.Identity)
    assert m.classifier.in_features == 2048


@pytest.mark.parametrize("name", ["resnet32", "resnet18", "cnn"])
def test_normed_classifier_bounded(name):
    torch.manual_seed(0)
    m = build_model(name, 5, in_channels=3, normed_classifier=True).eval()
    assert isinstance(m.classifier, NormedLinear)
    with torch.no_grad():
        out = m(torch.randn(3, 3, 32, 32) * 10)
    assert out.shape == (3, 5)
    assert out.abs().max().item() <= 1.0 + 1e-6


def test_normed_linear_matches_ldam_formula():
    torch.manual_seed(0)
    head = NormedLinear(6, 4)
    assert head.weight.shape == (6, 4)
    assert (head.weight.norm(dim=0) <= 1.0 + 1e-5).all()  # renorm_(2, 1, 1e-5).mul_(1e5): columns of norm ≤ 1
    x = torch.randn(5, 6)
    expected = (x / x.norm(dim=1, keepdim=True)) @ (head.weight / head.weight.norm(dim=0, keepdim=True))
    torch.testing.assert_close(head(x), expected)
    # a sample aligned with a class column scores 1
    torch.testing.assert_close(head(head.weight[:, 2][None] * 3.0)[0, 2], torch.tensor(1.0))


# ---------------------------------------------------------------------------------------------
# training-time behaviour: gradients, channels_last, bf16 autocast, torch.compile


@pytest.mark.parametrize("name", ["resnet32", "cnn"])
def test_gradients_flow(name):
    m = build_model(name, 4, in_channels=1, normed_classifier=(name == "resnet32")).train()
    logits = m(torch.randn(2, 1, 28, 28))
    logits.sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, pname


@pytest.mark.parametrize("name", ["resnet32", "cnn"])
def test_channels_last_and_bf16_autocast(name):
    torch.manual_seed(0)
    m = build_model(name, 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        mc = m.to(memory_format=torch.channels_last)
        out_cl = mc(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf, feats_bf = mc.forward_with_features(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, ref, rtol=1e-4, atol=1e-4)
    assert out_bf.shape == (2, 10) and feats_bf.shape == (2, FEATURE_DIM[name])
    assert torch.isfinite(out_bf.float()).all()
    assert (out_bf.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.1


@pytest.mark.parametrize("name", ["resnet32", "cnn"])
def test_compiles_without_graph_breaks(name):
    m = build_model(name, 10, normed_classifier=True).eval()
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x))
        fwf = torch.compile(m.forward_with_features, backend="eager", fullgraph=True)
        logits, feats = fwf(x)
    torch.testing.assert_close(feats, m.features(x))


# ---------------------------------------------------------------------------------------------


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="resnet32, resnet18, resnet34, resnet50, vgg16, vgg19, cnn"):
        build_model("resnet101", 10)
    with pytest.raises(ValueError):
        build_model("cnn", 0)
    assert MODELS == ("resnet32", "resnet18", "resnet34", "resnet50", "vgg16", "vgg19", "cnn", "airbench94", "airbench-small")


@pytest.mark.parametrize("name", ["cnn", "resnet32"])
def test_logits_leave_the_classifier_in_float32_under_autocast(name):
    in_channels = 1 if name == "cnn" else 3
    model = build_model(name, 10, in_channels).eval()
    x = torch.randn(4, in_channels, 28 if name == "cnn" else 32, 28 if name == "cnn" else 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, features = model.forward_with_features(x)
        assert model(x).dtype == torch.float32
    assert logits.dtype == torch.float32
    assert features.dtype == torch.bfloat16  # the trunk still runs in bf16
