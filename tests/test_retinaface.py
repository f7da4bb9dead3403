"""RetinaFace: the release's parameter names, strict loading, and detections equal to the retinaface_pytorch package."""
import sys
import zipfile

import numpy as np
import pytest
import torch

from src.faces.detectors import RetinaFaceDetector
from src.faces.retinaface import INV_STD, MEAN, RetinaFace, RetinaFacePredictor, load_retinaface, priors


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random-weight model saved as the release saves it: a zip holding one plain torch file."""
    tmp = tmp_path_factory.mktemp("retina")
    torch.manual_seed(0)
    state = RetinaFace().state_dict()
    torch.save(state, tmp / "retinaface_resnet50_2020-07-20.pth")
    with zipfile.ZipFile(tmp / "retinaface_resnet50_2020-07-20-f168fae3c.zip", "w") as z:
        z.write(tmp / "retinaface_resnet50_2020-07-20.pth", "retinaface_resnet50_2020-07-20.pth")
    return tmp, state


@pytest.fixture(scope="module")
def package(reference_packages):
    """The protocol's own code: retinaface_pytorch 0.0.8's predict_single module."""
    sys.path.append(str(reference_packages))  # after the venv: its albumentations stays the one imported
    try:
        from retinaface import predict_single, prior_box
    finally:
        sys.path.remove(str(reference_packages))
    return predict_single, prior_box


def test_parameter_names_and_shapes_are_the_releases():
    shapes = {k: tuple(v.shape) for k, v in RetinaFace().state_dict().items()}
    assert shapes["body.conv1.weight"] == (64, 3, 7, 7) and "body.layer4.2.bn3.running_var" in shapes
    assert shapes["fpn.output1.0.weight"] == (256, 512, 1, 1) and shapes["fpn.merge2.0.weight"] == (256, 256, 3, 3)
    assert shapes["ssh1.conv3X3.0.weight"] == (128, 256, 3, 3) and shapes["ssh3.conv7x7_3.1.weight"] == (64,)
    assert shapes["ClassHead.2.conv1x1.weight"] == (4, 256, 1, 1) and shapes["BboxHead.0.conv1x1.bias"] == (8,)
    assert shapes["LandmarkHead.1.conv1x1.weight"] == (20, 256, 1, 1) and not any("fc" in k for k in shapes)


def test_anchors_equal_the_packages(package):
    assert priors(640, 640).shape == (2 * (80 * 80 + 40 * 40 + 20 * 20), 4)  # the well-known 16,800
    for h, w in ((720, 1280), (1152, 2048), (333, 517)):
        ref = package[1].priorbox(min_sizes=[[16, 32], [64, 128], [256, 512]], steps=[8, 16, 32], clip=False,
                                  image_size=(h, w))
        assert torch.equal(priors(h, w), ref)


def test_loads_zip_pth_and_module_prefix_strictly(weights, tmp_path):
    folder, state = weights
    for name in ("retinaface_resnet50_2020-07-20-f168fae3c.zip", "retinaface_resnet50_2020-07-20.pth"):
        path = folder / name
        model = load_retinaface(path)
        assert torch.equal(model.state_dict()["fpn.output3.0.weight"], state["fpn.output3.0.weight"])
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    load_retinaface(tmp_path / "dp.pth")
    broken = {k: v for k, v in state.items() if not k.startswith("ClassHead.0")}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"(?s)2 missing.*ClassHead.0.conv1x1"):
        load_retinaface(tmp_path / "broken.pth")
    with pytest.raises(FileNotFoundError, match=r"(?s)retinaface_resnet50_2020-07-20-f168fae3c.zip.*ternaus.*dlib.*"
                                                r"different AUCs"):
        load_retinaface(tmp_path / "nowhere.zip")


def test_postprocessing_scales_back_rounds_and_keeps_boxes_unclipped(weights):
    predictor = RetinaFacePredictor(weights[0] / "retinaface_resnet50_2020-07-20.pth")
    h, w = 100, 200  # resized to 400 x 200 at max_size 400: coordinates come back halved
    anchors = priors(200, 400)
    near = (anchors[:, 2] - 32 / 400).abs() + (anchors[:, 1] - 0.5).abs()
    inside = int(torch.argmin(near + (anchors[:, 0] - 0.5).abs()))
    edge = int(torch.argmin(near + (anchors[:, 0] - 4 / 400).abs()))  # its box sticks out on the left
    logits = torch.zeros(1, len(anchors), 2)
    logits[0, :, 0], logits[0, [inside, edge], 1] = 5.0, 10.0
    loc = torch.zeros(1, len(anchors), 4)
    loc[0, inside, 0] = 0.1234  # x offset: 0.1234 * 0.1 * 32 px in the resized image
    predictor.model = lambda x: (loc, logits, torch.zeros(1, len(anchors), 10))
    [(boxes, scores)] = predictor([np.zeros((h, w, 3), np.uint8)], max_size=400)
    assert len(boxes) == 2 and np.allclose(scores, 0.99)
    by_x = boxes[np.argsort(boxes[:, 0, 0])]
    cx, cy = (anchors[inside, :2] * torch.tensor([400, 200])).tolist()
    expected = np.round(np.array([[cx + 0.39488 - 16, cy - 16], [cx + 0.39488 + 16, cy + 16]]) / 2, 2)
    assert np.array_equal(by_x[1, :2], expected) and np.array_equal(by_x[1, 2:], [[cx / 2, cy / 2]] * 5)
    assert by_x[0, 0, 0] < 0  # returned unclipped, as the package returns it


def astronaut_frame() -> np.ndarray:
    """scikit-image's public-domain astronaut photo in a black 1280x720 frame (FF++'s size)."""
    from skimage import data

    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[100:612, 400:912] = data.astronaut()
    return frame


@pytest.mark.slow
def test_detections_equal_the_retinaface_pytorch_package(package, tmp_path):
    """One random state dict for both: heads scaled so boxes stay near their anchors and a few hundred anchors pass
    0.7; then faces, boxes, keypoints and scores at the video setting (2048) and the photo setting (1280)."""
    torch.manual_seed(1)
    state = RetinaFace().state_dict()
    for k in state:
        if k.startswith(("BboxHead", "LandmarkHead")) and k.endswith(("weight", "bias")):
            state[k] = state[k] * 0.05
    frame = astronaut_frame()
    torch.save(state, tmp_path / "r.pth")
    ours = RetinaFacePredictor(tmp_path / "r.pth")
    with torch.no_grad():  # put the 0.7 threshold in the middle of a gap near the 300th most face-like anchor
        _, logits, _ = ours.model(torch.from_numpy((frame - MEAN) * INV_STD).permute(2, 0, 1)[None])
    margin = np.sort((logits[0, :, 1] - logits[0, :, 0]).numpy())[::-1][250:351].astype(np.float64)
    k = int(np.argmax(margin[:-1] - margin[1:]))
    for i in range(3):
        state[f"ClassHead.{i}.conv1x1.bias"][1::2] += float(np.log(0.7 / 0.3) - (margin[k] + margin[k + 1]) / 2)
    torch.save(state, tmp_path / "r.pth")
    ours = RetinaFacePredictor(tmp_path / "r.pth")
    for max_size in (2048, 1280):
        ref = package[0].Model(max_size=max_size)
        ref.load_state_dict(state)
        ref.eval()
        expected = ref.predict_jsons(frame)
        [(boxes, scores)] = ours([frame], max_size=max_size)
        assert 20 <= len(expected) == len(boxes), (max_size, len(expected), len(boxes))
        ref_boxes = np.array([[e["bbox"][:2], e["bbox"][2:], *e["landmarks"]] for e in expected])
        order, ref_order = np.lexsort(boxes[:, 0].T), np.lexsort(ref_boxes[:, 0].T)
        assert np.abs(boxes[order] - ref_boxes[ref_order]).max() <= 0.01 + 1e-9
        assert np.abs(scores[order] - np.array([e["score"] for e in expected])[ref_order]).max() <= 1e-5
        print(f"max_size {max_size}: {len(boxes)} faces, max box/keypoint difference "
              f"{np.abs(boxes[order] - ref_boxes[ref_order]).max():.4f} px")


def test_detector_sorts_faces_largest_first_and_uses_the_photo_setting_for_images(weights, monkeypatch):
    detector = RetinaFaceDetector(weights[0] / "retinaface_resnet50_2020-07-20-f168fae3c.zip")
    calls = []

    def predict(frames, max_size):
        calls.append(max_size)
        small, large = [[0, 0], [10, 10], *[[5, 5]] * 5], [[20, 20], [60, 70], *[[40, 40]] * 5]
        return [(np.array([small, large], float), np.array([0.99, 0.8]))] * len(frames)

    monkeypatch.setattr(detector, "predict", predict)
    faces = detector.detect(np.zeros((90, 120, 3), np.uint8), image=True)
    assert [f.score for f in faces] == [0.8, 0.99] and faces[0].landmarks is None
    assert len(detector.detect_frames([np.zeros((90, 120, 3), np.uint8)] * 3)) == 3
    assert calls == [None, 2048, 2048, 2048]  # photo: its own size; video frames: 2048, one at a time on the CPU
