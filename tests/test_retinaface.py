"""RetinaFace: the release's parameter names, strict loading from .pth or .zip, anchors, and post-processing."""
import zipfile

import numpy as np
import pytest
import torch

from src.retinaface import RetinaFace, RetinaFaceDetector, load_retinaface, priors


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random-weight model saved as the release saves it: a zip holding one plain torch file."""
    tmp = tmp_path_factory.mktemp("retina")
    torch.manual_seed(0)
    state = RetinaFace().state_dict()
    torch.save(state, tmp / "retinaface_resnet50_2020-07-20.pth")
    with zipfile.ZipFile(tmp / "retinaface_resnet50_2020-07-20.zip", "w") as z:
        z.write(tmp / "retinaface_resnet50_2020-07-20.pth", "retinaface_resnet50_2020-07-20.pth")
    return tmp, state


def test_parameter_names_and_shapes_are_the_releases():
    shapes = {k: tuple(v.shape) for k, v in RetinaFace().state_dict().items()}
    assert shapes["body.conv1.weight"] == (64, 3, 7, 7) and "body.layer4.2.bn3.running_var" in shapes
    assert shapes["fpn.output1.0.weight"] == (256, 512, 1, 1) and shapes["fpn.merge2.0.weight"] == (256, 256, 3, 3)
    assert shapes["ssh1.conv3X3.0.weight"] == (128, 256, 3, 3) and shapes["ssh3.conv7x7_3.1.weight"] == (64,)
    assert shapes["ClassHead.2.conv1x1.weight"] == (4, 256, 1, 1) and shapes["BboxHead.0.conv1x1.bias"] == (8,)
    assert shapes["LandmarkHead.1.conv1x1.weight"] == (20, 256, 1, 1) and not any("fc" in k for k in shapes)


def test_anchor_count_of_a_640_image():
    assert priors(640, 640).shape == (2 * (80 * 80 + 40 * 40 + 20 * 20), 4)  # the well-known 16,800


def test_loads_zip_pth_and_module_prefix_strictly(weights, tmp_path):
    folder, state = weights
    for path in (folder / "retinaface_resnet50_2020-07-20.zip", folder / "retinaface_resnet50_2020-07-20.pth"):
        model = load_retinaface(path)
        assert torch.equal(model.state_dict()["fpn.output3.0.weight"], state["fpn.output3.0.weight"])
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    load_retinaface(tmp_path / "dp.pth")
    broken = {k: v for k, v in state.items() if not k.startswith("ClassHead.0")}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"(?s)2 missing.*ClassHead.0.conv1x1"):
        load_retinaface(tmp_path / "broken.pth")
    with pytest.raises(FileNotFoundError, match="retinaface_resnet50_2020-07-20"):
        load_retinaface(tmp_path / "nowhere.zip")


def test_postprocessing_returns_the_confident_anchor_in_image_coordinates(weights):
    folder, _ = weights
    detector = RetinaFaceDetector(folder / "retinaface_resnet50_2020-07-20.pth")
    h, w = 100, 200  # padded to a 200 x 200 square, 50 px above and below
    anchors = priors(200, 200)
    k = int(torch.argmin((anchors[:, 0] - 0.5).abs() + (anchors[:, 1] - 0.5).abs() + (anchors[:, 2] - 0.16).abs()))
    logits = torch.zeros(1, len(anchors), 2)
    logits[0, :, 0], logits[0, k, 1] = 5.0, 10.0  # one anchor is a face, every other one is background

    detector.model = lambda x: (torch.zeros(1, len(anchors), 4), logits, torch.zeros(1, len(anchors), 10))
    faces = detector.detect(np.zeros((h, w, 3), np.uint8))
    assert len(faces) == 1 and faces[0].score > 0.99 and faces[0].landmarks is None
    cx, cy, bw, bh = (anchors[k] * 200).tolist()
    expected = [[cx - bw / 2, cy - bh / 2 - 50], [cx + bw / 2, cy + bh / 2 - 50]]
    assert np.allclose(faces[0].box[:2], expected, atol=1e-3)
    assert np.allclose(faces[0].box[2:], [[cx, cy - 50]] * 5, atol=1e-3)  # zero offsets: keypoints at the centre
