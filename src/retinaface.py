"""RetinaFace (ResNet-50), the face detector of the published SBI protocol, loaded strictly from a local file.

The network (ResNet-50 C3-C5, FPN, SSH context modules, per-level class/box/landmark heads with 2 anchors) and its
inference (RGB normalised with ImageNet mean/std, padded to a square of the longest side, anchors of 16-512 px,
confidence 0.7, NMS 0.4) follow the `retinaface_pytorch` release whose 'resnet50_2020-07-20' weights the SBI
reference used. Parameter names match that release so its state dict loads as is; nothing is downloaded.
"""
from __future__ import annotations

import io
import logging
import zipfile
from itertools import product
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import nms

from .faces import Face
from .models import strict_load, torch_load
from .sbi import iou

_logger = logging.getLogger(__name__)
MIN_SIZES, STEPS, VARIANCE = ((16, 32), (64, 128), (256, 512)), (8, 16, 32), (0.1, 0.2)
MEAN, STD = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255


def _conv_bn(cin: int, cout: int, kernel: int = 3, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class SSH(nn.Module):
    """Context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated."""

    def __init__(self, channels: int = 256):
        super().__init__()
        self.conv3X3 = _conv_bn(channels, channels // 2, relu=False)
        self.conv5X5_1 = _conv_bn(channels, channels // 4)
        self.conv5X5_2 = _conv_bn(channels // 4, channels // 4, relu=False)
        self.conv7X7_2 = _conv_bn(channels // 4, channels // 4)
        self.conv7x7_3 = _conv_bn(channels // 4, channels // 4, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.conv5X5_1(x)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(mid), self.conv7x7_3(self.conv7X7_2(mid))], 1))


class FPN(nn.Module):
    def __init__(self, channels: tuple[int, ...] = (512, 1024, 2048), out: int = 256):
        super().__init__()
        self.output1, self.output2, self.output3 = (_conv_bn(c, out, kernel=1) for c in channels)
        self.merge1, self.merge2 = _conv_bn(out, out), _conv_bn(out, out)

    def forward(self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor) -> list[torch.Tensor]:
        p5 = self.output3(c5)
        p4 = self.merge2(self.output2(c4) + F.interpolate(p5, size=c4.shape[-2:], mode="nearest"))
        p3 = self.merge1(self.output1(c3) + F.interpolate(p4, size=c3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class _Head(nn.Module):
    def __init__(self, values: int, channels: int = 256, anchors: int = 2):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(len(x), -1, self.values)


class RetinaFace(nn.Module):
    """[N, 3, H, W] normalised RGB -> (box regressions [N, A, 4], class logits [N, A, 2], landmarks [N, A, 10])."""

    def __init__(self):
        super().__init__()
        self.body = IntermediateLayerGetter(resnet50(weights=None), {"layer2": 1, "layer3": 2, "layer4": 3})
        self.fpn = FPN()
        self.ssh1, self.ssh2, self.ssh3 = SSH(), SSH(), SSH()
        self.ClassHead = nn.ModuleList(_Head(2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = self.fpn(*self.body(x).values())
        features = [ssh(p) for ssh, p in zip((self.ssh1, self.ssh2, self.ssh3), levels)]
        return tuple(torch.cat([h(f) for h, f in zip(heads, features)], 1)
                     for heads in (self.BboxHead, self.ClassHead, self.LandmarkHead))


def priors(height: int, width: int) -> torch.Tensor:
    """Anchors (cx, cy, w, h), relative to the image, in the order of the heads' outputs."""
    out = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        for i, j in product(range(-(-height // step)), range(-(-width // step))):
            out += [[(j + 0.5) * step / width, (i + 0.5) * step / height, s / width, s / height] for s in sizes]
    return torch.tensor(out)


def decode(loc: torch.Tensor, landmarks: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Regressions -> boxes (x0, y0, x1, y1) and 5 landmarks (x, y), relative to the image."""
    centre = anchors[:, :2] + loc[:, :2] * VARIANCE[0] * anchors[:, 2:]
    size = anchors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCE[1])
    points = anchors[:, None, :2] + landmarks.view(-1, 5, 2) * VARIANCE[0] * anchors[:, None, 2:]
    return torch.cat([centre - size / 2, centre + size / 2], 1), points


def load_retinaface(path: str | Path) -> RetinaFace:
    """The detector from a local weights file: the release's .zip or the .pth inside it; loaded strictly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"RetinaFace weights {path} not found: download 'retinaface_resnet50_2020-07-20' (a .zip, from the "
            f"releases of the retinaface_pytorch project, the SBI protocol's detector) to {path} or pass "
            f"--retinaface-weights, or use --detector dlib")
    if zipfile.is_zipfile(path) and not any(n.endswith("data.pkl") for n in zipfile.ZipFile(path).namelist()):
        with zipfile.ZipFile(path) as z:  # the release zip holds one plain torch file
            state = torch_load(io.BytesIO(z.read(next(n for n in z.namelist() if not n.endswith("/")))), path)
    else:
        state = torch_load(path, path)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    model = RetinaFace()
    strict_load(model, {k.removeprefix("module."): v for k, v in state.items()}, f"{path} (RetinaFace ResNet-50)")
    return model.eval()


class RetinaFaceDetector:
    """RetinaFace boxes with 5 keypoints; dlib landmarks attached by box overlap when `landmarks` is given."""

    def __init__(self, weights: str | Path, landmarks=None, threshold: float = 0.7, nms_threshold: float = 0.4,
                 device: str | torch.device = "cpu"):
        self.model, self.device = load_retinaface(weights).to(device), device
        self.landmarks, self.threshold, self.nms_threshold = landmarks, threshold, nms_threshold

    @torch.no_grad()
    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces of one RGB uint8 frame, largest first."""
        h, w = rgb.shape[:2]
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        square = np.zeros((side, side, 3), np.float32)
        square[top:top + h, left:left + w] = (rgb - MEAN) / STD
        x = torch.from_numpy(square).permute(2, 0, 1)[None].to(self.device)
        loc, logits, marks = (t[0].float().cpu() for t in self.model(x))
        boxes, points = decode(loc, marks, priors(side, side))
        scores = logits.softmax(1)[:, 1]
        keep = scores > self.threshold
        boxes, points, scores = boxes[keep] * side, points[keep] * side, scores[keep]
        keep = nms(boxes, scores, self.nms_threshold)
        shift = torch.tensor([left, top], dtype=torch.float32)
        boxes, points = boxes[keep].view(-1, 2, 2) - shift, points[keep] - shift
        boxes = torch.maximum(torch.minimum(boxes, torch.tensor([w - 1.0, h - 1.0])), torch.zeros(2))
        dlib_faces = self.landmarks.detect(rgb) if self.landmarks is not None else []
        faces = []
        for box, pts, score in zip(boxes.numpy(), points.numpy(), scores.tolist()):
            overlaps = [iou(box.reshape(-1), f.box[:2].reshape(-1)) for f in dlib_faces]
            best = int(np.argmax(overlaps)) if overlaps else -1
            landmarks = dlib_faces[best].landmarks if best >= 0 and overlaps[best] > 0.3 else None
            faces.append(Face(np.concatenate([box, pts]).astype(np.float32), landmarks, score))
        return sorted(faces, key=lambda f: (-f.area, -f.score))
