"""Networks of the training engine (PAPER.md §5): ResNet-32 for CIFAR, ResNet-18/34/50 and VGG-16/19 for 32×32
inputs (paper Table 1, Fig. 4), a small CNN.

Every model exposes its penultimate feature, which DSB's storage pool and the semantic-scale
measurements read::

    model.features(x)              -> (N, F)       penultimate feature (after global average pooling)
    model.classifier               -> nn.Linear or NormedLinear, F -> num_classes
    model(x)                       == model.classifier(model.features(x))   (the classifier in float32)
    model.forward_with_features(x) -> (logits, features), one pass

``build_model(name, num_classes, in_channels=3, normed_classifier=False)`` builds one of ``MODELS``.

* ``resnet32`` is LDAM-DRW's ResNet-32 (Cao et al. 2019, ``models/resnet_cifar.py``, after Idelbayev's
  CIFAR ResNets): 3×3 stem with 16 channels, three stages of five BasicBlocks with 16/32/64 channels,
  option-A shortcuts (stride-2 subsampling plus zero-padded channels, no parameters), Kaiming-normal
  initialisation of every conv and linear weight, global average pooling, 64-d feature.
  463,504 parameters without the head; with a linear head over 10 classes 464,154 (the published 0.46 M).
* ``resnet18`` / ``resnet34`` / ``resnet50`` are torchvision's networks with the usual small-image stem: the
  7×7 stride-2 conv becomes a 3×3 stride-1 conv and the max-pool is removed; torchvision's blocks and
  initialisation are kept. 512-d feature (2048-d for ResNet-50's bottleneck blocks).
* ``vgg16`` / ``vgg19`` are the CIFAR VGGs with batch norm (kuangliu/pytorch-cifar ``models/vgg.py``, cfg at
  lines 7-12: conv3×3-BN-ReLU stacks and five 2×2 max-pools, a single linear head over the 512-d feature at
  line 19), built from torchvision's ``vgg16_bn`` / ``vgg19_bn`` convolutional part, which has the same layers,
  and torchvision's initialisation. The max-pools round up (``ceil_mode``) so that 28×28 inputs reach 1×1 as
  32×32 ones do; a global average pool gives the 512-d feature. Paper Fig. 4 compares class rankings across
  ResNet-18/34/50 and VGG-16/19.
* ``airbench94`` and ``airbench-small`` are Keller Jordan's airbench94 network (KellerJordan/cifar10-airbench,
  ``legacy/airbench94.py`` lines 160-236), written anew: a 2×2 whitening convolution (24 = 2·3·2² channels, no
  padding, frozen weights initialised from the eigenvectors of the covariance of 2×2 patches, ± each, lines
  242-257; its bias trains for ``whiten_bias_epochs`` and is then frozen, line 410), GELU, three conv groups
  (conv3×3 → max-pool 2 → batch norm → GELU → conv3×3 → batch norm → GELU; widths 64/256/256 or 32/128/128;
  3×3 convs without bias, default init then a Dirac identity on the first ``in_channels`` filters, lines
  179-188; batch norm with eps 1e-12, momentum 0.4 (= 1 − 0.6) and a frozen scale of 1, lines 171-177), a global
  max-pool (the source's MaxPool2d(3) on its 3×3 map; any input size here) and the pooled last-group output as
  the penultimate feature (256-d / 128-d). The head keeps a bias (the second stages read and write it) and
  carries the source's output scale 1/9 inside itself (:class:`ScaledLinear`, line 228); under LDAM the cosine
  head replaces it. The whitening layer is initialised by :meth:`Airbench.init_whitening` from a sample of
  normalised training images (the engine draws a seeded, class-mixed one: long-tailed subsets are stored in
  class order).
* ``cnn`` is a small network for MNIST-sized smoke runs: two conv-BN-ReLU-maxpool stages (32, 64
  channels), adaptive average pooling to 2×2 and a 256→128 linear+ReLU layer; 128-d feature, any input
  size from 28 to 64 (anything ≥ 4 pixels works).

All forwards are free of Python branching on tensor values, so the models run under
``torch.compile``, bf16 autocast and channels_last memory format.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

MODELS = ("resnet32", "resnet18", "resnet34", "resnet50", "vgg16", "vgg19", "cnn", "airbench94", "airbench-small")
#: conv-group widths of the airbench models (airbench94's own; the small preset halves them twice over: 4x fewer MACs)
AIRBENCH_WIDTHS = {"airbench94": (64, 256, 256), "airbench-small": (32, 128, 128)}

__all__ = [
    "MODELS",
    "build_model",
    "NormedLinear",
    "FeatureModel",
    "ResNet32",
    "TorchvisionResNet",
    "CifarVGG",
    "SmallCNN",
    "Airbench",
    "ScaledLinear",
    "linear_head",
    "set_linear_head",
    "resnet32_param_count",
]


class NormedLinear(nn.Module):
    """Cosine classifier of LDAM: ``normalize(x, dim=1) @ normalize(W, dim=0)``, outputs in [-1, 1].

    The weight is (in_features, out_features), as in LDAM-DRW, initialised by
    ``uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)`` (every column rescaled to norm ≤ 1).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = nn.Parameter(torch.empty(self.in_features, self.out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def _make_classifier(in_features: int, num_classes: int, normed: bool) -> nn.Module:
    return NormedLinear(in_features, num_classes) if normed else nn.Linear(in_features, num_classes)


class FeatureModel(nn.Module):
    """Base class: subclasses define ``features`` and set ``classifier`` and ``feature_dim``."""

    feature_dim: int
    classifier: nn.Module

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 logits, features). The classifier runs in float32 even under autocast: bf16 logits round
        close scores to ties, and argmax breaks ties towards the lower class index (the head class). A float64
        network (a numerical test) keeps float64."""
        feats = self.features(x)
        with torch.autocast(x.device.type, enabled=False):
            return self.classifier(feats.to(torch.promote_types(feats.dtype, torch.float32))), feats


# ---------------------------------------------------------------------------------------------
# ResNet-32 (LDAM-DRW)


class ShortcutA(nn.Module):
    """Option-A shortcut: ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p))`` with ``p = planes // 4``.

    LDAM-DRW writes it as a ``LambdaLayer`` around a lambda; a named module does the same and can be
    pickled and deep-copied.
    """

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)

    def extra_repr(self) -> str:
        return f"pad_channels={self.pad}"


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = ShortcutA(planes)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


def _kaiming_init(m: nn.Module) -> None:
    # LDAM-DRW's _weights_init: Kaiming-normal weights of every Linear and Conv2d (NormedLinear is
    # neither and keeps its own initialisation; biases keep PyTorch's defaults).
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.kaiming_normal_(m.weight)


class ResNet32(FeatureModel):
    """LDAM-DRW's ResNet-32 for CIFAR (``ResNet_s(BasicBlock, [5, 5, 5])``); 64-d feature."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, normed_classifier: bool = False,
                 num_blocks: tuple[int, int, int] = (5, 5, 5)):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(64, num_blocks[2], stride=2)
        self.feature_dim = 64
        self.classifier = _make_classifier(64, num_classes, normed_classifier)
        self.apply(_kaiming_init)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes * BasicBlock.expansion
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        # LDAM-DRW: F.avg_pool2d(out, out.size()[3]) — the same as a global mean for square inputs.
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def resnet32_param_count(num_classes: int, in_channels: int = 3, normed_classifier: bool = False) -> int:
    """Parameters of ``ResNet32`` from first principles (convs have no bias; BN has γ and β)."""

    def conv(i: int, o: int) -> int:
        return 9 * i * o

    def bn(c: int) -> int:
        return 2 * c

    total = conv(in_channels, 16) + bn(16)
    in_planes = 16
    for planes in (16, 32, 64):
        for _ in range(5):
            total += conv(in_planes, planes) + bn(planes) + conv(planes, planes) + bn(planes)
            in_planes = planes
    total += 64 * num_classes + (0 if normed_classifier else num_classes)
    return total


# ---------------------------------------------------------------------------------------------
# ResNet-18 / 34 / 50 (torchvision, small-image stem)


class TorchvisionResNet(FeatureModel):
    """torchvision ResNet-18/34/50 with a 3×3 stride-1 stem and no max-pool; 512-d (50: 2048-d) feature."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, normed_classifier: bool = False):
        super().__init__()
        ctor = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34, 50: torchvision.models.resnet50}[depth]
        net = ctor(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
        net.maxpool = nn.Identity()
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.backbone = net
        self.classifier = _make_classifier(self.feature_dim, num_classes, normed_classifier)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)  # conv1 .. layer4, avgpool, flatten; fc is Identity


# ---------------------------------------------------------------------------------------------
# VGG-16 / VGG-19 with batch norm (CIFAR layout)


class CifarVGG(FeatureModel):
    """torchvision's ``vgg16_bn`` / ``vgg19_bn`` convolutional part, ceil-mode max-pools, global average pool,
    one linear head (kuangliu/pytorch-cifar ``models/vgg.py``); 512-d feature."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, normed_classifier: bool = False):
        super().__init__()
        ctor = {16: torchvision.models.vgg16_bn, 19: torchvision.models.vgg19_bn}[depth]
        body = ctor(weights=None).features
        if in_channels != 3:
            first = nn.Conv2d(in_channels, body[0].out_channels, kernel_size=3, padding=1)
            nn.init.kaiming_normal_(first.weight, mode="fan_out", nonlinearity="relu")  # torchvision's VGG init
            nn.init.zeros_(first.bias)
            body[0] = first
        for layer in body:
            if isinstance(layer, nn.MaxPool2d):
                layer.ceil_mode = True
        self.body = nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.feature_dim = 512
        self.classifier = _make_classifier(self.feature_dim, num_classes, normed_classifier)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


# ---------------------------------------------------------------------------------------------
# small CNN


class SmallCNN(FeatureModel):
    """Two conv-BN-ReLU-maxpool stages (32, 64 channels), 2×2 adaptive average pool, 256→128 linear+ReLU."""

    def __init__(self, num_classes: int, in_channels: int = 1, normed_classifier: bool = False,
                 feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(1),
            nn.Linear(64 * 4, feature_dim),
            nn.ReLU(inplace=True),
        )
        self.feature_dim = feature_dim
        self.classifier = _make_classifier(feature_dim, num_classes, normed_classifier)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


# ---------------------------------------------------------------------------------------------
# airbench94 (KellerJordan/cifar10-airbench, legacy/airbench94.py)

WHITEN_KERNEL = 2  # line 217
WHITEN_EPS = 5e-4  # init_whitening_conv's eps, line 253
OUTPUT_SCALE = 1 / 9  # hyp['net']['scaling_factor'], line 60


class ScaledLinear(nn.Linear):
    """A linear head whose weight term carries a fixed scale: ``scale · x Wᵀ + b`` (airbench's Linear then Mul(1/9),
    with a bias added for the second stages). :func:`linear_head` gives its effective weight ``scale · W``."""

    def __init__(self, in_features: int, out_features: int, scale: float = OUTPUT_SCALE):
        super().__init__(in_features, out_features, bias=True)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) * self.scale + self.bias

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:g}"


def linear_head(classifier: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) with ``logits = x Wᵀ + b`` of a linear head (nn.Linear or ScaledLinear), detached, float32."""
    if not isinstance(classifier, nn.Linear) or classifier.bias is None:
        raise TypeError(f"a linear head with a bias is needed, got {type(classifier).__name__}")
    scale = getattr(classifier, "scale", 1.0)
    return (classifier.weight.detach().float() * scale), classifier.bias.detach().float().clone()


def set_linear_head(state: dict, classifier: nn.Module, weight: torch.Tensor, bias: torch.Tensor, prefix: str = "classifier.") -> None:
    """Write an effective (W, b) into a state dict for ``classifier`` (undoing a ScaledLinear's scale)."""
    scale = getattr(classifier, "scale", 1.0)
    state[prefix + "weight"] = (weight / scale).to(state[prefix + "weight"])
    state[prefix + "bias"] = bias.to(state[prefix + "bias"])


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """airbench's BatchNorm: eps 1e-12, running-statistics momentum 0.4 (its 0.6 in the other convention), the scale
    fixed at 1 (not trained), the shift trained."""

    def __init__(self, num_features: int):
        super().__init__(num_features, eps=1e-12, momentum=0.4)
        self.weight.requires_grad = False


class DiracConv(nn.Conv2d):
    """3×3 'same' convolution without bias, PyTorch's default init with a Dirac identity on the first in_channels
    filters (airbench's Conv.reset_parameters)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.dirac_(self.weight.data[: self.weight.size(1)])


class AirbenchGroup(nn.Module):
    """conv → max-pool 2 → batch norm → GELU → conv → batch norm → GELU (airbench's ConvGroup)."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.conv1 = DiracConv(channels_in, channels_out)
        self.norm1 = FrozenScaleBatchNorm(channels_out)
        self.conv2 = DiracConv(channels_out, channels_out)
        self.norm2 = FrozenScaleBatchNorm(channels_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class Airbench(FeatureModel):
    """airbench94's network (see the module docstring); ``widths`` of its three conv groups."""

    def __init__(self, num_classes: int, in_channels: int = 3, normed_classifier: bool = False,
                 widths: tuple[int, int, int] = AIRBENCH_WIDTHS["airbench94"]):
        super().__init__()
        whiten_width = 2 * in_channels * WHITEN_KERNEL**2
        self.whiten = nn.Conv2d(in_channels, whiten_width, WHITEN_KERNEL, padding=0, bias=True)
        nn.init.zeros_(self.whiten.bias)
        self.whiten.weight.requires_grad = False
        self.groups = nn.Sequential(AirbenchGroup(whiten_width, widths[0]), AirbenchGroup(widths[0], widths[1]),
                                    AirbenchGroup(widths[1], widths[2]))
        self.feature_dim = widths[2]
        self.classifier = NormedLinear(widths[2], num_classes) if normed_classifier else ScaledLinear(widths[2], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.whiten(x)))
        return F.adaptive_max_pool2d(x, 1).flatten(1)

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor) -> None:
        """Set the whitening filters from normalised ``images`` (N, C, H, W): the eigenvectors of the covariance of
        their 2×2 patches scaled by 1/√(λ + 5e-4), and their negatives (airbench94.py lines 242-257)."""
        c, k = images.shape[1], WHITEN_KERNEL
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1).transpose(1, 3).reshape(-1, c, k, k)
        flat = patches.reshape(len(patches), -1)
        covariance = flat.T @ flat / len(flat)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance, UPLO="U")
        eigenvalues = eigenvalues.flip(0).view(-1, 1, 1, 1)
        eigenvectors = eigenvectors.T.reshape(c * k * k, c, k, k).flip(0)
        scaled = eigenvectors / torch.sqrt(eigenvalues + WHITEN_EPS)
        self.whiten.weight.copy_(torch.cat((scaled, -scaled)).to(self.whiten.weight))


# ---------------------------------------------------------------------------------------------


def build_model(name: str, num_classes: int, in_channels: int = 3, normed_classifier: bool = False) -> FeatureModel:
    """Build one of ``MODELS`` (``normed_classifier=True`` gives LDAM's cosine head)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    num_classes = int(num_classes)
    in_channels = int(in_channels)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    normed = bool(normed_classifier)
    if name == "resnet32":
        return ResNet32(num_classes, in_channels, normed)
    if name == "resnet18":
        return TorchvisionResNet(18, num_classes, in_channels, normed)
    if name == "resnet34":
        return TorchvisionResNet(34, num_classes, in_channels, normed)
    if name == "resnet50":
        return TorchvisionResNet(50, num_classes, in_channels, normed)
    if name in ("vgg16", "vgg19"):
        return CifarVGG(int(name[3:]), num_classes, in_channels, normed)
    if name in AIRBENCH_WIDTHS:
        return Airbench(num_classes, in_channels, normed, AIRBENCH_WIDTHS[name])
    return SmallCNN(num_classes, in_channels, normed)
