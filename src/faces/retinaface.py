"""RetinaFace (ResNet-50), the face detector of the published SBI protocol, loaded strictly from a local file.

The network (ResNet-50 C3-C5, FPN, SSH context modules, per-level class/box/landmark heads with 2 anchors) and its
inference reproduce the `retinaface_pytorch` package (0.0.8) whose 'resnet50_2020-07-20' weights the SBI reference
used, step for step (`Model.predict_jsons`): the RGB frame is resized so that its longest side is `max_size`
(2048 for videos, which upscales a 1280x720 frame by 1.6; the frame's own longest side for a single photo), normalised
with ImageNet mean/std, run without padding, decoded with the anchors of that size, kept above confidence 0.7, NMS
0.4, scaled back, and returned unclipped and rounded to 2 decimals; a box that is degenerate once clipped is
skipped. tests/test_retinaface.py compares detections with the package itself. Parameter names match that release,
so its state dict loads as is; nothing is downloaded.
"""
from __future__ import annotations

import io
import logging
import tempfile
import time
import zipfile
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import nms

from src.common import checkpoint
from src.common.logs import MissingFile

_logger = logging.getLogger(__name__)
MIN_SIZES, STEPS, VARIANCE = ((16, 32), (64, 128), (256, 512)), (8, 16, 32), (0.1, 0.2)
VIDEO_MAX_SIZE = 2048  # get_model("resnet50_2020-07-20", max_size=2048): the protocol's setting for video frames
RELEASE = "retinaface_resnet50_2020-07-20-f168fae3c.zip"  # the file get_model downloads (ternaus/retinaface releases)
# albumentations' Normalize: float32 mean and 1/std, both times 255
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * np.float32(255)
INV_STD = np.reciprocal(np.array([0.229, 0.224, 0.225], np.float32) * np.float32(255), dtype=np.float32)


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


@lru_cache(maxsize=16)
def priors(height: int, width: int) -> torch.Tensor:
    """Anchors (cx, cy, w, h) relative to a height x width input, in the heads' order (cached per size)."""
    levels = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        i, j, size = np.meshgrid(np.arange(-(-height // step)), np.arange(-(-width // step)), sizes, indexing="ij")
        levels.append(np.stack([(j + 0.5) * step / width, (i + 0.5) * step / height, size / width, size / height],
                               -1).reshape(-1, 4))  # float64 as the package's Python floats, then float32
    return torch.from_numpy(np.concatenate(levels).astype(np.float32))


def decode(loc: torch.Tensor, landmarks: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Regressions -> boxes (x0, y0, x1, y1) and 5 landmarks (x, y) relative to the input, as the package computes."""
    centre = anchors[:, :2] + loc[:, :2] * VARIANCE[0] * anchors[:, 2:]
    size = anchors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCE[1])
    corner = centre - size / 2
    points = anchors[:, None, :2] + landmarks.view(-1, 5, 2) * VARIANCE[0] * anchors[:, None, 2:]
    return torch.cat([corner, corner + size], 1), points


def resize_longest(rgb: np.ndarray, max_size: int) -> np.ndarray:
    """albumentations' LongestMaxSize(max_size): bilinear, each side rounded (half to even); no-op at scale 1."""
    h, w = rgb.shape[:2]
    scale = max_size / float(max(h, w))
    if scale == 1.0:
        return rgb
    return cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)


def load_retinaface(path: str | Path) -> RetinaFace:
    """The detector from a local weights file: the release's .zip or the .pth inside it; loaded strictly."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(
            f"RetinaFace weights {path} not found: download {RELEASE} (the file retinaface_pytorch's "
            f"get_model('resnet50_2020-07-20') fetches, from the releases of github.com/ternaus/retinaface) to "
            f"{path.parent}/ or pass --retinaface-weights. --detector dlib needs no file, but its tighter boxes give "
            f"different AUCs than the published ones")
    if zipfile.is_zipfile(path) and not any(n.endswith("data.pkl") for n in zipfile.ZipFile(path).namelist()):
        with zipfile.ZipFile(path) as z:  # the release zip holds one plain torch file
            state = checkpoint.load(io.BytesIO(z.read(next(n for n in z.namelist() if not n.endswith("/")))), path)
    else:
        state = checkpoint.load(path, path)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    model = RetinaFace()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    checkpoint.strict_load(model, state, f"{path} (RetinaFace ResNet-50)")
    return model.eval()


class RetinaFacePredictor:
    """`retinaface_pytorch` 0.0.8's `predict_jsons`, on a batch of equally sized RGB uint8 frames at a time."""

    def __init__(self, weights: str | Path, threshold: float = 0.7, nms_threshold: float = 0.4,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = load_retinaface(weights).to(self.device)
        self.threshold, self.nms_threshold = threshold, nms_threshold

    @torch.no_grad()
    def __call__(self, frames: list[np.ndarray], max_size: int | None = VIDEO_MAX_SIZE
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per frame: (boxes (n, 7, 2) float64 [x0, y0], [x1, y1], 5 keypoints; scores (n,)), both rounded to 2
        decimals, in the package's order (by score). `max_size` None: each frame's own longest side."""
        h, w = frames[0].shape[:2]
        if any(f.shape[:2] != (h, w) for f in frames):
            raise ValueError("RetinaFacePredictor takes a batch of frames of one size")
        inputs = []
        for rgb in frames:
            x = resize_longest(rgb, max_size or max(h, w)).astype(np.float32)
            x -= MEAN
            x *= INV_STD
            inputs.append(x)
        th, tw = inputs[0].shape[:2]
        batch = torch.from_numpy(np.stack(inputs)).permute(0, 3, 1, 2).contiguous().to(self.device)
        anchors = priors(th, tw).to(self.device)
        scale = torch.tensor([tw, th], dtype=torch.float32, device=self.device)
        return [self._postprocess(*out, anchors, scale, h / th, w, h) for out in zip(*self.model(batch))]

    def _postprocess(self, loc: torch.Tensor, logits: torch.Tensor, marks: torch.Tensor, anchors: torch.Tensor,
                     scale: torch.Tensor, coeff: float, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        boxes, points = decode(loc, marks, anchors)
        boxes, points, scores = boxes * scale.repeat(2), points * scale, logits.softmax(-1)[:, 1]
        keep = scores > self.threshold
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        keep = nms(boxes, scores, self.nms_threshold)
        boxes, points = boxes[keep].cpu().numpy() * np.float32(coeff), points[keep].cpu().numpy() * np.float32(coeff)
        scores = scores[keep].cpu().numpy().astype(float)
        x0, y0 = np.clip(boxes[:, 0], 0, w - 1), np.clip(boxes[:, 1], 0, h - 1)
        valid = (x0 < np.clip(boxes[:, 2], x0 + 1, w - 1)) & (y0 < np.clip(boxes[:, 3], y0 + 1, h - 1))
        out = np.concatenate([boxes.reshape(-1, 2, 2), points], 1)[valid].astype(float)
        return np.round(out, 2), np.round(scores[valid], 2)


def time_detection(size: tuple[int, int] = (1280, 720), max_size: int | None = VIDEO_MAX_SIZE, frames: int = 4,
                   batch: int = 1, device: str = "cpu", weights: str | Path | None = None) -> float:
    """Frames per second of RetinaFace on `frames` random frames of `size` (W, H), after one warm-up batch.

    Without `weights` the network has random weights (the time is the network's; fewer boxes reach NMS)."""
    with tempfile.TemporaryDirectory() as tmp:
        if weights is None:
            weights = Path(tmp) / "random.pth"
            torch.save(RetinaFace().state_dict(), weights)
        predictor = RetinaFacePredictor(weights, device=device)
    rgb = [np.random.default_rng(i).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for i in range(batch)]
    predictor(rgb, max_size)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(-(-frames // batch)):
        predictor(rgb, max_size)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    return -(-frames // batch) * batch / (time.perf_counter() - start)
