"""Config validation: every bad value is an error that names the key, the value and the fix."""
import json
import os
import time

import pytest

from src.common.config import Config, ConfigError, load_config, resolve_path


def write(tmp_path, values):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    return path


def test_shipped_configs_load():
    sbi = load_config("configs/config_SBI.json")
    assert (sbi.image_size, sbi.batch_size, sbi.epoch, sbi.compression, sbi.student_size) == (380, 32, 100, "c23", 256)
    demo = load_config("configs/config_demo.json")
    assert demo.synthetic_data and demo.data_root == "data/demo"


def test_defaults_fill_missing_keys(tmp_path):
    cfg = load_config(write(tmp_path, {"lr": 0.01}))
    assert cfg.lr == 0.01 and cfg.temperature == Config().temperature and cfg.seed == 5
    assert cfg.sync_bn is False and load_config(write(tmp_path, {"sync_bn": True})).sync_bn is True


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'temprature'.*did you mean 'temperature'"):
        load_config(write(tmp_path, {"temprature": 3}))


@pytest.mark.parametrize("values, message", [
    ({"lr": "fast"}, r"'lr' = 'fast' has type str; expected float"),
    ({"epoch": 1.5}, r"'epoch' = 1.5 has type float; expected int"),
    ({"epoch": True}, r"'epoch' = True has type bool"),
    ({"sync_bn": 1}, r"'sync_bn' = 1 has type int; expected bool"),
    ({"lr": 0}, r"'lr' = 0.0 is out of range; allowed \(0.0, 10.0\]"),
    ({"alpha_end": 1.5}, r"'alpha_end' = 1.5 is out of range; allowed \[0.0, 1.0\]"),
    ({"compression": "c24"}, r"'compression' = 'c24' is not allowed; choose one of \['raw', 'c23', 'c40'\]"),
    ({"batch_size": 31}, r"'batch_size' = 31 must be even"),
    ({"image_size": None}, r"'image_size' must not be null"),
    ({"alpha_schedule": [[1, 0.9], [1, 0.8]]}, r"alpha_schedule.*strictly increasing"),
])
def test_bad_values_name_key_value_and_range(tmp_path, values, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, values))


def test_overrides_are_json_with_plain_string_fallback(tmp_path):
    cfg = load_config(write(tmp_path, {}), ["lr=1e-3", "model=resnet18", "student_image_size=null", "grad_clip=2"])
    assert (cfg.lr, cfg.model, cfg.student_image_size, cfg.grad_clip) == (1e-3, "resnet18", None, 2.0)
    assert cfg.student_size == cfg.image_size
    with pytest.raises(ConfigError, match="unknown key 'bach_size' in --set.*did you mean 'batch_size'"):
        load_config(write(tmp_path, {}), ["bach_size=4"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(write(tmp_path, {}), ["lr"])


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{'lr': 1}")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")


def test_glob_resolves_to_the_newest_file(tmp_path, caplog):
    for i, name in enumerate(["a_1/weights/BEST.pth", "a_2/weights/BEST.pth"]):
        path = tmp_path / name
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (time.time() - 100 + i * 50,) * 2)
    pattern = str(tmp_path / "a_*/weights/BEST.pth")
    with caplog.at_level("INFO"):
        assert resolve_path(pattern) == tmp_path / "a_2/weights/BEST.pth"
    assert "matched 2 file(s)" in caplog.text
    with pytest.raises(FileNotFoundError, match=r"teacher_weights: '.*b_\*/BEST.pth' matches no file"):
        resolve_path(str(tmp_path / "b_*/BEST.pth"), "teacher_weights")
