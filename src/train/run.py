"""A training run's folder (config.json, log.csv, train.log, curves.png, weights/) and the command line making it."""
from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import inspect
import json
import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator, Mapping

import torch

from src.common import checkpoint
from src.common.config import FIELDS, Config, ConfigError, build_config, load_config, parse_override, resolve_path
from src.common.distributed import Dist, broadcast, init_distributed
from src.common.logs import MissingFile, UserError, setup_logging
from src.common.plots import pyplot

_logger = logging.getLogger(__name__)


def config_keys() -> str:
    """Every config key with its default (as JSON, strings bare), its allowed values (from the field's metadata) and
    its comment in `Config`, in Config's groups."""
    comments, groups, group = {}, {}, None
    for line in inspect.getsource(Config).splitlines():
        code, _, comment = line.strip().partition("  # ")
        if code.startswith("# ---"):
            group = code.strip("# -").split(" (")[0]
        elif (name := code.split(":")[0]) in FIELDS:
            comments[name], groups[name], group = comment, group, None
    defaults, lines = Config(), ["config keys (in CONFIG or as --set KEY=VALUE), their defaults and allowed values:"]
    for name, f in FIELDS.items():
        if groups.get(name):
            lines.append(f"  {groups[name]}:")
        value = getattr(defaults, name)
        lines.append(f"    {name:<28}{value if isinstance(value, str) else json.dumps(value):<22}"
                     f"{_allowed(f.metadata):<23} {comments.get(name, '')}".rstrip())
    return "\n".join(lines)


def _allowed(metadata: Mapping) -> str:
    """'a|b' for choices, '[lo, hi]' for a range ('(lo, hi]' when lo itself is refused), '' for neither."""
    if "choices" in metadata:
        return "|".join(metadata["choices"])
    if "range" in metadata:
        lo, hi, lo_open = metadata["range"]
        return f"{'(' if lo_open else '['}{json.dumps(lo)}, {json.dumps(hi)}]"
    return ""


def run_parser(description: str) -> argparse.ArgumentParser:
    """The command line both stages share: CONFIG, -n NAME, --resume RUN_DIR, --set KEY=VALUE; --help lists the
    config keys."""
    parser = argparse.ArgumentParser(description=description, epilog=config_keys(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="JSON config, e.g. configs/config_SBI.json")
    parser.add_argument("-n", "--name", required=True, help="run name: output/<name>_<timestamp>/")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its weights/last.pth")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return parser


@dataclass
class Run:
    """One training run: its config, its folder, the last.pth state it resumes (None: a new run) and this process's
    place among the processes."""

    cfg: Config
    folder: Path
    state: dict | None = None
    dist: Dist = field(default_factory=Dist)
    started: bool = False  # set when training begins: a failure after it is no refusal

    @property
    def weights(self) -> Path:
        return self.folder / "weights"

    @property
    def resumed(self) -> bool:
        return self.state is not None

    @contextlib.contextmanager
    def removed_if_refused(self) -> Iterator[None]:
        """A refusal (UserError, SystemExit) before training began removes the new run's folder (made by this
        process: `_new_folder`) when it holds nothing but what prepare_run wrote (config.json, train.log, an empty
        weights/); a resumed run's stays."""
        try:
            yield
        except (UserError, SystemExit):
            if self.dist.is_main and not (self.resumed or self.started) and self._as_prepared():
                shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def _as_prepared(self) -> bool:
        return ({p.name for p in self.folder.glob("*")} <= {"config.json", "train.log", "weights"}
                and not any(self.weights.glob("*")))

    def keep(self) -> None:
        """Write config.json and log to train.log: when a new run starts and once a resumed run is accepted (a
        refused resume leaves its folder as it was)."""
        (self.folder / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        setup_logging(self.folder / "train.log")

    def log_epoch(self, row: dict) -> None:
        """Append `row` to log.csv (with its header first)."""
        path = self.folder / "log.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})

    def truncate_log(self, epoch: int) -> None:
        """Keep the log.csv rows up to `epoch` (a run killed between its log row and its last.pth wrote one more)."""
        path = self.folder / "log.csv"
        if path.exists():
            lines = path.read_text().splitlines(keepends=True)
            path.write_text("".join(lines[:1] + [line for line in lines[1:] if int(line.split(",")[0]) <= epoch]))

    def plot_curves(self) -> None:
        """curves.png: train/val loss and val AUC per epoch, from log.csv."""
        plt = pyplot()

        with open(self.folder / "log.csv") as f:
            rows = list(csv.DictReader(f))
        epochs = [int(r["epoch"]) for r in rows]
        fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 4))
        for key in ("train_loss", "val_loss"):
            ax_loss.plot(epochs, [float(r[key]) for r in rows], marker="o", label=key)
        ax_auc.plot(epochs, [float(r["val_auc"]) for r in rows], marker="o", color="tab:green")
        ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
        ax_auc.set(xlabel="epoch", ylabel="val AUC", title="val AUC")
        ax_loss.legend()
        fig.tight_layout()
        fig.savefig(self.folder / "curves.png", dpi=80)
        plt.close(fig)


WEIGHT_GLOBS = ("teacher_weights", "pretrained_student_weights", "student_imagenet_weights")


def _newest(pattern: str, key: str) -> str:
    """The newest file matching `pattern`, or the pattern itself when none does (its user reports that)."""
    try:
        return str(resolve_path(pattern, key))
    except FileNotFoundError:
        return pattern


def _new_folder(base: Path) -> Path:
    """`base`, or `base_2`, `base_3`, ... where a run of the same name started in the same second: made here, so a
    refused run removes only its own folder."""
    folder, n = base, 1
    while True:
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            n += 1
            folder = base.with_name(f"{base.name}_{n}")


def prepare_run(config_path: str, name: str, overrides: list[str], resume: str | None) -> Run:
    """A new run folder for `name` (made by rank 0), or the folder of the run to resume with its last.pth state."""
    dist = init_distributed()
    setup_logging()
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    if resume:  # rank 0 reads the run folder (other nodes may not see it) and hands it to every rank
        run_dir = Path(resume)
        last = run_dir / "weights" / "last.pth"
        found = broadcast(last.is_file() if dist.is_main else None, dist)
        if not found:
            raise MissingFile(f"cannot resume: {last} does not exist (is {run_dir} a run folder of this project?)")
        values, state = broadcast((json.loads((run_dir / "config.json").read_text()), checkpoint.load(last))
                                  if dist.is_main else None, dist)
        values.update(parse_override(o) for o in overrides)
        cfg = build_config(values, source=str(run_dir / "config.json"))
        _logger.info("resuming %s after epoch %d, step %d (config from its config.json; %s is not read)", run_dir,
                     state["epoch"], state["step"], config_path)
    else:
        cfg = load_config(config_path, overrides)
        run_dir = Path(cfg.output_dir) / f"{name}_{datetime.now():%Y%m%d-%H%M%S}"
        state = None
    for key in WEIGHT_GLOBS:  # resolved once, on rank 0: every node loads the same file, and config.json names it
        pattern = getattr(cfg, key)
        if pattern and glob.has_magic(pattern):
            setattr(cfg, key, broadcast(_newest(pattern, key) if dist.is_main else None, dist))
    if cfg.batch_size % (2 * dist.world):
        raise ConfigError(f"batch_size {cfg.batch_size} (images, global) must split into real/fake pairs over "
                          f"{dist.world} processes: use a multiple of {2 * dist.world}")
    if cfg.sync_bn and dist.world > 1 and dist.device.type != "cuda":
        raise ConfigError("sync_bn needs CUDA processes (SyncBatchNorm does not run on the CPU): set sync_bn to false")
    if dist.is_main:
        try:  # fail now, not after the first epoch, when the output folder is unwritable or the disk is full
            run_dir = run_dir if resume else _new_folder(run_dir)
            probe = run_dir / "weights" / ".write_test"
            probe.parent.mkdir(exist_ok=True)
            probe.write_bytes(b"\0" * (1 << 20))
            probe.unlink()
        except OSError as e:
            raise UserError(f"cannot write to the output folder {run_dir} ({e}); free disk space or set output_dir "
                            f"to a writable folder") from None
    run = Run(cfg, broadcast(run_dir, dist), state, dist)
    torch.manual_seed(cfg.seed)  # before the model is built: the same config gives the same initial weights
    if dist.is_main:
        if not run.resumed:
            run.keep()
            _logger.info("run folder: %s%s", run.folder, f" ({dist.world} processes)" if dist.world > 1 else "")
    return run
