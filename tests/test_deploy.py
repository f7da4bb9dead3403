"""The deployed path: the exact MobileViTv2 rewrite, ONNX export through ONNX Runtime, int8, and the benchmark."""
import copy
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from src import benchmark, export
from src.common import checkpoint
from src.common.layout import REFERENCE_FACES
from src.common.logs import cli
from src.deploy import benchmark as bench
from src.deploy import onnx as onnx_export
from src.deploy import runtime as deploy
from src.deploy.classifier import OrtClassifier
from src.deploy.runtime import ort_session
from src.models.fast_mobilevit import FastMobileVitV2Block, fast_mobilevitv2
from src.models.networks import count_params, create_classifier

STUDENT, TEACHER = "mobilevitv2_050", "test_efficientnet"  # tiny: a MobileViTv2 and an EfficientNet with SE blocks


def _random_norms(model: nn.Module) -> nn.Module:
    """Non-trivial GroupNorm affines and BN affines and statistics, so that every weight the rewrite moves matters."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("size", [64, 72])  # 72: odd feature maps, which MobileViTv2 interpolates to patch multiples
def test_fast_mobilevitv2_equals_timm_with_the_same_weights(size):
    model = _random_norms(create_classifier(STUDENT))
    fast = fast_mobilevitv2(copy.deepcopy(model))
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = model.forward_features(x)
        assert torch.allclose(fast.forward_features(x), features, atol=1e-4 * features.abs().max(), rtol=0)
        assert torch.allclose(fast(x), model(x), atol=1e-5, rtol=1e-4)
    blocks = [m for m in fast.modules() if isinstance(m, FastMobileVitV2Block)]
    assert len(blocks) == 3 and [isinstance(b.conv_proj, nn.Identity) for b in blocks] == [True, True, False]
    assert count_params(fast) < count_params(model)  # two projections folded into the next stage's 1x1 conv
    assert not any(isinstance(m, nn.GroupNorm) for m in fast.modules())  # every affine folded into a 1x1 conv


@pytest.mark.slow
def test_exported_student_standardises_without_shape_or_affine_ops(tmp_path):
    """Each norm is InstanceNormalization between two Reshapes of constant shapes, read only by convolutions."""
    proto = onnx.load(onnx_export.export_onnx(_random_norms(create_classifier(STUDENT)), 64, tmp_path / "s.onnx"))
    nodes, consumers = list(proto.graph.node), {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    norms = [n for n in nodes if n.op_type == "InstanceNormalization"]
    assert len(norms) == 21 and not any(n.op_type == "Shape" for n in nodes)  # 2 in each of 9 layers, 1 a block
    for norm in norms:
        (reshape,) = consumers[norm.output[0]]
        assert reshape.op_type == "Reshape" and {n.op_type for n in consumers[reshape.output[0]]} <= {"Conv", "Mul"}


@pytest.fixture(scope="module")
def teacher_onnx(tmp_path_factory) -> tuple[nn.Module, Path]:
    """The tiny teacher and its export at 64 px."""
    model = _random_norms(create_classifier(TEACHER))
    path = tmp_path_factory.mktemp("onnx") / "teacher.onnx"
    result = onnx_export.export(model, 64, path)
    assert result["random"] < onnx_export.TOLERANCE and result["real"] is None  # no config: no real crops
    return model, path


@pytest.mark.parametrize("arch", [STUDENT, TEACHER])
@pytest.mark.slow
def test_onnx_round_trip_matches_pytorch_at_any_batch(arch, teacher_onnx, tmp_path):
    if arch == TEACHER:
        model, path = teacher_onnx
    else:
        model, path = _random_norms(create_classifier(arch)), tmp_path / "m.onnx"
        assert onnx_export.export(model, 64, path)["random"] < onnx_export.TOLERANCE
    graph = onnx.load(path).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch axis
    assert "ReduceMean" not in {n.op_type for n in graph.node}  # SE and head pools are GlobalAveragePool
    x = torch.rand(5, 3, 64, 64)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(ort_session(path).run(None, {"x": x.numpy()})[0], expected, atol=1e-4)


def test_export_refuses_a_file_that_differs_from_pytorch(teacher_onnx, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "export_onnx", lambda model, size, path: Path(shutil.copy(teacher_onnx[1], path)))
    with pytest.raises(ValueError, match="differs from PyTorch"):  # another model's file
        onnx_export.export(_random_norms(create_classifier(TEACHER)), 64, tmp_path / "m.onnx")


@pytest.fixture(scope="module")
def demo(tiny_config):
    """A generated data root, its config and one of this project's checkpoints (crops at 48 px, model input 40)."""
    tmp = tiny_config("deploy", image_size=48, student_image_size=40, num_workers=0).parent
    torch.save({"model": create_classifier(TEACHER).state_dict(), "arch": TEACHER, "epoch": 1, "val_auc": 0.5,
                "config": {"image_size": 48, "student_image_size": 40}}, tmp / "student.pth")
    return tmp


@pytest.mark.slow
def test_cli_writes_int8_checked_on_real_crops(demo, tmp_path, capsys):
    out = tmp_path / "student.onnx"
    export.main(["--weights", str(demo / "student.pth"), "--format", "onnx-int8", "--out", str(out),
                 "--config", str(demo / "config.json")])
    printed = capsys.readouterr().out
    assert f"(onnx-int8, 48 px, opset {onnx_export.OPSET}, dynamic batch; training faces: retinaface)" in printed
    assert "on real val crops" in printed
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(out).graph.node}
    recorded = ort_session(out).get_modelmeta().custom_metadata_map[onnx_export.FACES_KEY]  # no faces in its config:
    assert json.loads(recorded) == REFERENCE_FACES  # the SBI reference's, as src.evaluate reads the checkpoint
    logits = OrtClassifier(out)(torch.rand(3, 3, 48, 48))  # crops at 48 px: the resize to 40 is in the file
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()


@pytest.mark.slow
def test_benchmark_times_and_auc_checks_the_shipped_files_as_they_are(demo, tmp_path, capsys, monkeypatch):
    data_root = json.loads((demo / "config.json").read_text())["data_root"]
    weights = tmp_path / "BEST.pth"
    torch.save({"model": create_classifier(TEACHER).state_dict(), "arch": TEACHER, "epoch": 1, "val_auc": 0.5,
                "config": {"image_size": 48, "student_image_size": 40, "data_root": data_root}}, weights)
    export.main(["--weights", str(weights), "--format", "onnx-int8"])
    shipped = (tmp_path / "BEST_int8.onnx").read_bytes()
    quantised = []
    monkeypatch.setattr(bench, "quantize_int8", lambda src, dst, batches: quantised.append(Path(dst).name)
                        or deploy.quantize_int8(src, dst, batches))
    benchmark.main(["--teacher-arch", TEACHER, "--teacher-size", "48", "--student", str(weights), "--paths",
                    "eager,onnx-int8", "--runs", "2", "--warmup", "1", "--batch", "4", "--batch-runs", "1",
                    "--train-batch", "2", "--out", str(tmp_path / "b")])
    printed = capsys.readouterr().out
    assert quantised == ["teacher_int8.onnx"] and (tmp_path / "BEST_int8.onnx").read_bytes() == shipped
    result = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    assert {(r["model"], r["path"], r["file"]) for r in result["rows"]} == {
        ("teacher", "eager", "random weights"), ("teacher", "onnx-int8", "random weights"),
        ("student", "eager", "BEST.pth"), ("student", "onnx-int8", "BEST_int8.onnx")}
    for column in ("params", "input", "bs1 median", "bs1 p90", "bs4 img/s", "peak MB inference bs1",
                   "peak MB train step bs2"):
        assert column in printed
    assert all(r["latency_bs1_ms"] > 0 and r["peak_memory_mb"] > 0 for r in result["rows"])
    assert all(r["train_memory_mb"] > 0 for r in result["rows"] if r["path"] == "eager")
    assert set(result["ratios"]) == {"eager", "onnx-int8"} and "target (onnx-int8, batch 1)" in printed
    assert {(r["input"], r["network_input"]) for r in result["rows"] if r["model"] == "student"} == {(48, 40)}
    (check,) = result["auc_check"]  # the student's weights and its file, on its own training data's val split
    assert check["files"] == {"onnx-int8": "BEST_int8.onnx"} and set(check["auc"]) == {"eager", "onnx-int8"}
    assert check["data_root"] == data_root and (tmp_path / "b" / "benchmark.md").read_text() in printed

    with pytest.raises(SystemExit):  # the onnx path's file was never written
        cli(lambda: benchmark.main(["--student", str(weights), "--paths", "onnx", "--out", str(tmp_path / "c")]))
    assert f"no BEST.onnx beside {weights}" in capsys.readouterr().err
    torch.save({"model": create_classifier(TEACHER).state_dict(), "arch": TEACHER, "epoch": 2, "val_auc": 0.6,
                "config": {"image_size": 48, "student_image_size": 40}}, weights)  # trained on: the file is stale
    with pytest.raises(SystemExit):
        cli(lambda: benchmark.main(["--student", str(weights), "--paths", "onnx-int8", "--out", str(tmp_path / "c")]))
    assert "BEST_int8.onnx was not exported from" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_of_random_weights_times_the_architecture_as_shipped_or_bare(tmp_path, capsys):
    benchmark.main(["--teacher-arch", TEACHER, "--teacher-size", "48", "--student-arch", TEACHER,
                    "--student-size", "32", "--paths", "eager,onnx", "--runs", "1", "--warmup", "0", "--batch", "2",
                    "--batch-runs", "1", "--train-batch", "2", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    rows = json.loads((tmp_path / "benchmark.json").read_text())["rows"]
    assert {r["file"] for r in rows} == {"random weights"} and "the architecture's speed, not a shipped" in printed
    assert {(r["input"], r["network_input"]) for r in rows if r["model"] == "student"} == {(48, 32)}
    assert " 48→32 px " in printed and " 48 px " in printed  # the student fed the teacher's crop, as shipped
    benchmark.main(["--teacher-arch", TEACHER, "--teacher-size", "48", "--student-arch", TEACHER,
                    "--student-size", "32", "--student-input", "32", "--paths", "eager", "--runs", "1", "--warmup",
                    "0", "--batch", "2", "--batch-runs", "1", "--train-batch", "2", "--out", str(tmp_path / "bare")])
    rows = json.loads((tmp_path / "bare" / "benchmark.json").read_text())["rows"]
    assert [(r["input"], r["network_input"]) for r in rows if r["model"] == "student"] == [(32, 32)]


def test_export_takes_the_checkpoints_own_config_and_never_a_silent_demo_one(demo, tmp_path, capsys):
    data_root = json.loads((demo / "config.json").read_text())["data_root"]
    torch.save({"model": create_classifier(TEACHER).state_dict(), "arch": TEACHER, "epoch": 1, "val_auc": 0.5,
                "config": {"image_size": 48, "student_image_size": 40, "data_root": data_root}}, tmp_path / "own.pth")
    export.main(["--weights", str(tmp_path / "own.pth"), "--format", "onnx-int8", "--out", str(tmp_path / "o.onnx")])
    printed = capsys.readouterr().out
    assert f"int8 calibrated on 128 train crops (data root {data_root}, from the checkpoint)" in printed
    torch.save(create_classifier("tf_efficientnet_b4").state_dict(), tmp_path / "plain.pth")  # no training config
    with pytest.raises(SystemExit):
        cli(lambda: export.main(["--weights", str(tmp_path / "plain.pth"), "--format", "onnx-int8"]))
    assert "carries no training config: pass --config" in capsys.readouterr().err


def test_both_exported_files_carry_the_checkpoints_faces_record_and_a_model_card(demo, tmp_path, capsys):
    """A dlib-trained student: the fp32 and int8 files record its faces and weights, and each card names dlib."""
    data_root = json.loads((demo / "config.json").read_text())["data_root"]
    faces = {"detector": "dlib", "landmarks": "shape_predictor_68_face_landmarks.dat", "landmark_points": 68}
    weights = tmp_path / "BEST.pth"
    torch.save({"model": create_classifier(TEACHER).state_dict(), "arch": TEACHER, "epoch": 3, "val_auc": 0.8125,
                "config": {"image_size": 48, "student_image_size": 40, "data_root": data_root, "faces": faces,
                           "teacher_weights": "weights/FFc23.tar"}}, weights)
    for fmt in onnx_export.FORMATS:
        export.main(["--weights", str(weights), "--format", fmt])
    printed = capsys.readouterr().out
    for name in ("BEST.onnx", "BEST_int8.onnx"):
        recorded = ort_session(tmp_path / name).get_modelmeta().custom_metadata_map
        assert json.loads(recorded[onnx_export.FACES_KEY]) == faces
        assert recorded[onnx_export.WEIGHTS_KEY] == checkpoint.file_sha256(weights)
        card = (tmp_path / name).with_suffix(".md").read_text()
        assert card.startswith(f"# {name}\n") and "faces found by **dlib**" in card and "0.8125 at epoch 3" in card
        assert f"`{TEACHER}` (timm)" in card and "48 px face crop" in card and "resized inside the file to 40" in card
        assert "`weights/FFc23.tar`" in card and "--runtime onnx" in card and "## Terms" in card
        assert f"and its model card {tmp_path / name[:-5]}.md" in printed
    assert "int8 AUC drop" in (tmp_path / "BEST_int8.md").read_text()
    assert "int8 AUC drop" not in (tmp_path / "BEST.md").read_text()
