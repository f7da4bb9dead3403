"""The benchmark commands run on tiny settings and print every figure (their numbers are not asserted)."""
import json

from src import bench_data, bench_train


def test_bench_data_prints_both_mask_types_and_every_stage(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"image_size": 48, "batch_size": 4, "mask_type": "dfl_full"}))
    bench_data.main([str(config), "--synthetic", "160x128", "--face-size", "60", "--pairs", "4", "--workers", "1"])
    out = capsys.readouterr().out
    assert "1 process" in out and "1 workers" in out and all(s in out for s in bench_data.STAGES)
    assert out.count("ms") >= 2 * len(bench_data.STAGES) and "dfl_full" in out and "hull" in out


def test_bench_train_prints_both_stages_and_the_ratio(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": "test_efficientnet", "teacher_arch": "test_efficientnet",
                                  "image_size": 48, "student_image_size": 32}))
    bench_train.main([str(config), "--stage", "2", "--batch", "4", "--steps", "1", "--nproc", "2"])
    out = capsys.readouterr().out
    assert "stage 1:" in out and "stage 2:" in out and "s/step" in out and "images/s" in out and "peak" in out
    assert "stage 2 / stage 1 step time" in out and "expected" in out
    assert "teacher recipe" in out and "stage 1 student / teacher recipe" in out
    assert "2 gloo processes" in out and "scaling efficiency" in out
