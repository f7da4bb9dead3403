"""The training engine shared by both stages, top to bottom: loaders, one SAM step and epoch, validation, fit.

The stop on SIGINT/SIGTERM is src.train.stop's protocol; the run folder is src.train.run's Run."""
from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from src.common import checkpoint
from src.common.config import Config, ConfigError
from src.common.distributed import (
    Dist,
    all_true,
    any_true,
    barrier,
    epoch_indices,
    finish,
    gather,
    leave,
    sync_buffers,
)
from src.common.logs import UserError
from src.common.workers import fork_safe_opencv
from src.data.dataset import BadSampleTracker, DataQualityError, SBIDataset, build_dataset, collate_pairs
from src.models.networks import student_view
from src.train import stop
from src.train.losses import kd_loss
from src.train.run import Run
from src.train.sam import SAM, BNStats, frozen_bn_stats
from src.train.schedule import alpha_at, sbi_lr_lambda

_logger = logging.getLogger(__name__)


class NonFiniteError(UserError, RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def make_loader(dataset: SBIDataset, cfg: Config, dist: Dist = Dist(), epoch: int | None = None,
                skip_batches: int = 0) -> DataLoader:
    """This rank's batches of batch_size / 2 / world pairs: train (epoch given) shuffled per epoch, else val."""
    pairs = cfg.batch_size // 2 // dist.world
    if epoch is None:
        indices = epoch_indices(len(dataset), 0, cfg.seed, dist, None)
    else:
        dataset.set_epoch(epoch)
        indices = epoch_indices(len(dataset), epoch, cfg.seed, dist, pairs)[skip_batches * pairs:]
    if cfg.num_workers:
        fork_safe_opencv()  # else OpenCV would start one thread per core in every worker of every rank
    return stop.QuietLoader(dataset, batch_size=pairs, sampler=indices, num_workers=cfg.num_workers,
                            collate_fn=collate_pairs, pin_memory=dist.device.type == "cuda",
                            worker_init_fn=stop.quiet_worker)


def make_optimizer(model: nn.Module, cfg: Config, foreach: bool = True
                   ) -> tuple[SAM, torch.optim.lr_scheduler.LambdaLR]:
    """SAM over the configured base optimizer, with the SBI schedule (constant, then linear decay); foreach=False:
    SAM's and the base optimizer's work one parameter at a time (src.bench_train's comparison)."""
    if cfg.optimizer == "sgd":
        base, kwargs = torch.optim.SGD, dict(momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        base, kwargs = torch.optim.AdamW, dict(weight_decay=cfg.weight_decay)
    optimizer = SAM(model.parameters(), base, rho=cfg.sam_rho, adaptive=cfg.sam_adaptive, foreach=foreach, lr=cfg.lr,
                    **kwargs)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, sbi_lr_lambda(cfg.epoch, cfg.lr_decay_fraction))


def autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for forward passes on CUDA when cfg.amp asks for it (no gradient scaler: SAM-safe)."""
    if cfg.amp == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


SUMS = ("loss", "hard", "soft", "correct", "agree")  # kept on the device during an epoch, read once at its end
ADDITIVE = (*SUMS, "n")  # this rank's share: added over the ranks
SHARED = ("batches", "steps", "skipped")  # the epoch's position and its step decisions: the same on every rank


def new_sums() -> dict:
    return dict.fromkeys(ADDITIVE + SHARED, 0)


def stop_on_bad_data(tracker: BadSampleTracker, anywhere: bool, final: bool = False) -> None:
    """Raise DataQualityError on every rank when any rank's data failed too often (`anywhere`), or not at all."""
    if anywhere:
        tracker.check(final)
        raise DataQualityError("another process's samples failed past max_bad_fraction; its warnings name the files")


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: SAM, cfg: Config, epoch: int,
                    tracker: BadSampleTracker, teacher: nn.Module | None = None, dist: Dist = Dist(),
                    sums: dict | None = None) -> dict:
    """One epoch of SAM steps (stage 2, with a teacher: alpha*CE + (1-alpha)*KL(T)*T^2); returns running sums.

    Stops early, with sums["interrupted"] set, after the step in which SIGINT/SIGTERM arrived (src.train.stop).

    A step's cost besides its two forward and backward passes: one flag tensor (step finite, no stop signal, data
    fine) and one all-reduce of it, the step's one read of the device; the host's flags pick between two tensors
    made once per epoch (no copy to the device per step). The running sums stay on the device until the epoch ends,
    then one gather (`epoch_stats`; the progress bar reads them every 20 steps). SAM's perturb and restore, the
    clipping, the base optimizer's step and the BatchNorm snapshots are fused torch._foreach_* operations into
    buffers allocated once.
    """
    model.train()
    device, amp = dist.device, autocast(cfg, dist.device)
    yes, no = torch.tensor([True, False], device=device)  # the host's flags, built once: no copy to the device per step
    alpha = alpha_at(epoch, cfg.alpha_start, cfg.alpha_end, cfg.alpha_schedule) if teacher is not None else 1.0
    sums, running = dict(sums or new_sums(), interrupted=False), torch.zeros(len(SUMS), device=device)
    consecutive = 0
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    bn_before, bn_pass2 = BNStats(model), BNStats(model)
    # disable=None: no bar when stderr is not a terminal (log files); the per-epoch log line stays
    bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epoch}", leave=False, dynamic_ncols=True,
               disable=None if dist.is_main else True)
    for batch in bar:
        tracker.update(batch["failures"], len(batch["labels"]) // 2)
        images = batch["images"].to(device, non_blocking=True).contiguous(memory_format=memory)
        labels = batch["labels"].to(device, non_blocking=True)
        x = student_view(images, cfg.student_size)
        if teacher is not None:
            with torch.no_grad(), amp:  # once per batch: the same input gives the same logits in both SAM passes
                t_logits = teacher(images).float()

        def loss_of(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            if teacher is None:
                ce = F.cross_entropy(logits.float(), labels)  # noqa: B023 (called in this iteration only)
                return ce, ce, torch.zeros((), device=device)
            return kd_loss(logits, t_logits, labels, alpha, cfg.temperature)  # noqa: B023 (as above)

        # pass 1: gradient at w, local to each rank (SAM's authors perturb with each worker's own gradient);
        # BN running statistics move in this pass only
        optimizer.zero_grad(set_to_none=True)
        bn_before.save()  # put back if the step is skipped: NaN activations would poison them
        with model.no_sync() if isinstance(model, DDP) else contextlib.nullcontext():
            with amp:
                logits = model(x)
            loss, hard, soft = loss_of(logits)
            loss.backward()
        optimizer.first_step()  # climb to w + e(w); a non-finite gradient here makes pass 2 non-finite everywhere
        optimizer.zero_grad(set_to_none=True)
        # pass 2: gradient at w + e(w), averaged over ranks (so its norm, and the decision, is every rank's),
        # clipped, applied at w by second_step. Always backward: a synced forward alone leaves DDP's reducer armed.
        with frozen_bn_stats(model, bn_pass2):
            with amp:
                loss2 = loss_of(model(x))[0]
            loss2.backward()
        finite = torch.isfinite(optimizer.clip_grad_norm_(cfg.grad_clip)) & torch.isfinite(loss)
        ok, go_on, data_ok = all_true(torch.stack([finite, yes if stop.requested() is None else no,
                                                   no if tracker.exceeded() else yes]), dist)
        sums["batches"] += 1
        if ok:
            optimizer.second_step()
            consecutive, n = 0, len(labels)
            correct = (logits.argmax(1) == labels).sum()
            agree = (logits.argmax(1) == t_logits.argmax(1)).sum() if teacher is not None else correct * 0
            running += torch.stack([loss.detach() * n, hard.detach() * n, soft.detach() * n, correct, agree])
            sums["n"] += n
            sums["steps"] += 1
        else:
            optimizer.restore()
            optimizer.zero_grad(set_to_none=True)
            bn_before.restore()
            sums["skipped"] += 1
            consecutive += 1
            if consecutive >= cfg.max_consecutive_nonfinite:
                raise NonFiniteError(
                    f"{consecutive} consecutive steps had a non-finite loss or gradient (epoch {epoch}). "
                    "Likely causes: "
                    f"lr too high (now {optimizer.param_groups[0]['lr']:.2e}); in stage 2, a student that was not "
                    f"pre-trained in stage 1 (its logits are far from the teacher's, see the guide's NaN section); "
                    f"or corrupt input data. Lower lr, start stage 2 from the stage-1 BEST.pth, or check the data.")
        stop_on_bad_data(tracker, not data_ok)
        if sums["batches"] % 20 == 0 and sums["n"]:  # the bar reads the device sums now and then, not every step
            loss_sum, correct = running[[0, 3]].tolist()  # since the epoch's start, or since the resume
            bar.set_postfix(loss=f"{(sums['loss'] + loss_sum) / sums['n']:.4f}",
                            acc=f"{(sums['correct'] + correct) / sums['n']:.3f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if not go_on:
            sums["interrupted"] = True
            break
    for key, value in zip(SUMS, running.tolist()):
        sums[key] += value
    return sums


def epoch_stats(sums: dict, alpha: float | None, dist: Dist = Dist()) -> dict:
    """The log.csv columns of an epoch's training sums, added over all ranks (one gather)."""
    every_rank = gather(sums, dist)
    total = {k: sum(s[k] for s in every_rank) for k in ADDITIVE}
    n = max(total["n"], 1)
    out = dict(train_loss=total["loss"] / n, train_acc=total["correct"] / n, skipped_steps=sums["skipped"])
    if alpha is not None:
        out.update(alpha=alpha, hard_loss=total["hard"] / n, soft_loss=total["soft"] / n, agreement=total["agree"] / n)
    return out


@torch.no_grad()
def validate(model: nn.Module, loader: Iterable, size: int, dist: Dist = Dist(),
             tracker: BadSampleTracker | None = None, amp: contextlib.AbstractContextManager | None = None) -> dict:
    """Loss, accuracy and ROC AUC of softmax[:, 1] over the val reals and their SBI fakes, gathered from all ranks.

    Inputs go to the model's own device (the CPU for a model without parameters)."""
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))  # none: an ONNX Runtime model
    probs, targets, loss_sum = [], [], torch.zeros((), device=device)
    for batch in tqdm(loader, desc="val", leave=False, dynamic_ncols=True, disable=None if dist.is_main else True):
        if tracker is not None:
            tracker.update(batch["failures"], len(batch["labels"]) // 2)
        with amp or contextlib.nullcontext():
            logits = model(student_view(batch["images"].to(device, non_blocking=True), size))
        logits, labels = logits.float(), batch["labels"].to(device, non_blocking=True)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        probs.append(logits.softmax(1)[:, 1])
        targets.append(labels)
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415 (keeps scikit-learn's start-up out of other processes)

    parts = gather((torch.cat(probs).cpu().numpy(), torch.cat(targets).cpu().numpy(), loss_sum.item()), dist)
    probs, targets = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    auc = float(roc_auc_score(targets, probs)) if np.isfinite(probs).all() else float("nan")
    return dict(val_loss=sum(p[2] for p in parts) / len(targets), val_acc=float(((probs > 0.5) == targets).mean()),
                val_auc=auc)


def speed_settings(cfg: Config, device: torch.device) -> None:
    """On CUDA: cuDNN picks the fastest kernels for the fixed input sizes, float32 matmuls and convs use TF32."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    elif cfg.amp:
        _logger.info("amp '%s' is ignored on the CPU: training in float32", cfg.amp)


def compiled(module: nn.Module, cfg: Config, device: torch.device) -> nn.Module:
    """torch.compile(module) on CUDA when cfg.compile asks for it; the module itself elsewhere or where it fails."""
    if not cfg.compile:
        return module
    if device.type != "cuda":
        _logger.info("compile is ignored on the CPU")
        return module
    try:
        return torch.compile(module)
    except Exception as e:  # noqa: BLE001 (any backend failure: train uncompiled rather than not at all)
        _logger.warning("torch.compile failed (%s: %s): running uncompiled", type(e).__name__, e)
        return module


def _first_call_error(net: nn.Module, x: torch.Tensor, amp: contextlib.AbstractContextManager) -> str | None:
    """None when `net`'s first call on `x` works (forward and backward in train mode, a no-grad forward in eval mode),
    else its error in one line. Leaves no trace: gradients, BatchNorm statistics and the random state are put back."""
    stats = BNStats(net).save()
    try:
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), amp, \
                torch.set_grad_enabled(net.training):
            out = net(x)
            if out.requires_grad:
                out.float().sum().backward()
    except Exception as e:  # noqa: BLE001 (any compiler or backend failure: the caller falls back to eager)
        return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
    finally:
        stats.restore()
        net.zero_grad(set_to_none=True)
    return None


def eager_where_compile_fails(modules: dict[str, tuple[nn.Module, nn.Module, torch.Tensor]], dist: Dist = Dist(),
                              amp: contextlib.AbstractContextManager | None = None) -> dict[str, nn.Module]:
    """For each name's (compiled, eager, example input): the compiled module where its first call works on every
    process, else the eager one, with one warning.

    torch.compile compiles at the first call, so a missing C++ compiler or Triton shows only there, on every rank:
    the first call runs here, and one all-reduce of the outcomes gives every process the same modules."""
    errors = {name: None if c is e else _first_call_error(c, x, amp or contextlib.nullcontext())
              for name, (c, e, x) in modules.items()}
    works = dict(zip(errors, all_true(torch.tensor([error is None for error in errors.values()]), dist)))
    failed = [name for name, ok in works.items() if not ok]
    if failed:
        reasons = "; ".join(f"{name}: {errors[name] or 'failed on another process'}" for name in failed)
        _logger.warning("torch.compile failed at the first call (%s): running %s eager on every process", reasons,
                        " and ".join(failed))
    return {name: c if works[name] else e for name, (c, e, _) in modules.items()}


def sync_batchnorm(model: nn.Module, cfg: Config, dist: Dist) -> nn.Module:
    """`model` with SyncBatchNorm layers when cfg.sync_bn asks for it under several processes: BatchNorm then
    normalises over the global batch. The same parameters and buffers (so checkpoints do not change)."""
    if not (cfg.sync_bn and dist.world > 1):
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def ddp(net: nn.Module, dist: Dist) -> nn.Module:
    """`net` in DDP under several processes. broadcast_buffers=False: each process keeps its own BatchNorm running
    statistics (equal at the start) instead of taking rank 0's at every forward, a broadcast per step;
    `sync_buffers` hands rank 0's to every process before validation."""
    if dist.world == 1:
        return net
    new = "forward_sync_buffers" in inspect.signature(DDP).parameters  # torch > 2.9 renamed broadcast_buffers
    return DDP(net, device_ids=[dist.device] if dist.device.type == "cuda" else None,
               **{"forward_sync_buffers" if new else "broadcast_buffers": False})


def _who_signalled(signals: list[str | None]) -> str:
    """'SIGTERM' (one process), or which ranks got which signal: 'SIGTERM (ranks 0, 1)'."""
    if len(signals) == 1:
        return str(signals[0])
    ranks: dict[str, list[str]] = {}
    for rank, name in enumerate(signals):
        if name:
            ranks.setdefault(name, []).append(str(rank))
    return ", ".join(f"{name} (rank{'s' * (len(r) > 1)} {', '.join(r)})" for name, r in ranks.items())


def _resume_sums(saved: dict | list | None, dist: Dist) -> dict | None:
    """This rank's running sums from a mid-epoch last.pth (one dict per rank). Another world size: every rank at
    the saved position (the same step count on every rank), the additive sums of all saved ranks on rank 0."""
    if saved is None:
        return None
    per_rank = saved if isinstance(saved, list) else [saved]
    if len(per_rank) == dist.world:
        return per_rank[dist.rank]
    sums = {k: per_rank[0][k] for k in SHARED}
    sums.update({k: sum(s[k] for s in per_rank) if dist.is_main else 0 for k in ADDITIVE})
    return sums


def fit(run: Run, model: nn.Module, arch: str, teacher: nn.Module | None = None) -> Path:
    """Train `model` for cfg.epoch epochs (stage 2 when a teacher is given); returns the weights folder.

    Under torchrun every rank raises the same error together, and leaves the process group before it does."""
    try:
        return _fit(run, model, arch, teacher)
    except BaseException:
        leave(run.dist)
        raise


def _fit(run: Run, model: nn.Module, arch: str, teacher: nn.Module | None) -> Path:
    cfg, state, dist = run.cfg, run.state, run.dist
    device = dist.device
    speed_settings(cfg, device)
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    raw = sync_batchnorm(model.to(device, memory_format=memory), cfg, dist)  # before the optimizer takes its parameters
    train_set, val_set = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    cfg.faces = train_set.faces  # config.json and every checkpoint say which detector made the training data
    _logger.info("data: %d train frames, %d val frames; %s at %d px (crops at %d px)", len(train_set), len(val_set),
                 arch, cfg.student_size, cfg.image_size)
    if len(train_set) < cfg.batch_size // 2:
        raise ConfigError(f"the train split has {len(train_set)} frames, fewer than one batch of "
                          f"{cfg.batch_size // 2} pairs: lower batch_size or add data")
    if dist.is_main:  # accepted: a resumed run's config.json takes its --set now
        run.keep()
        if state is not None:
            _logger.info("resumed %s after epoch %d, step %d", run.folder, state["epoch"], state["step"])
    val_loader = make_loader(val_set, cfg, dist)
    tracker = BadSampleTracker(cfg.max_bad_fraction)
    optimizer, scheduler = make_optimizer(raw, cfg)
    saver = checkpoint.CheckpointSaver(run.weights, cfg.keep_top_k, state and state["top_k"])
    start, skip, sums = 1, 0, None
    if state is not None:
        raw.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)  # this config's schedule, also if --set changed epoch
        torch.set_rng_state(state["rng"])  # data randomness is seeded per sample, not from here
        start, skip, sums = state["epoch"] + 1, state["step"], _resume_sums(state["sums"], dist)
        if dist.is_main:
            run.truncate_log(state["epoch"])
    size, n = cfg.student_size, cfg.batch_size // dist.world
    candidates = dict(student=(compiled(raw.train(), cfg, device), raw,
                               torch.zeros(n, 3, size, size, device=device).contiguous(memory_format=memory)))
    if teacher is not None:  # never in DDP: it is frozen
        teacher = teacher.to(device, memory_format=memory)
        candidates["teacher"] = (compiled(teacher, cfg, device), teacher, torch.zeros(
            n, 3, cfg.image_size, cfg.image_size, device=device).contiguous(memory_format=memory))
    chosen = eager_where_compile_fails(candidates, dist, autocast(cfg, device))
    net, teacher = chosen["student"], chosen.get("teacher")
    model = ddp(net, dist)
    if teacher is not None:
        if state is None:
            auc = validate(teacher, val_loader, cfg.image_size, dist, amp=autocast(cfg, device))["val_auc"]
            _logger.info("teacher val AUC: %.4f", auc)
            if not auc >= cfg.min_teacher_auc:
                raise UserError(
                    f"the teacher scores val AUC {auc:.4f} < min_teacher_auc {cfg.min_teacher_auc} on SBI fakes: it "
                    f"was most likely loaded wrongly (wrong file, architecture or input size: it expects image_size "
                    f"{cfg.image_size}, RGB in [0, 1], no normalisation). See the guide's troubleshooting section.")

    def snapshot(epoch: int, **extra) -> dict:
        return dict(model=raw.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    epoch=epoch, arch=arch, config=cfg.to_dict(), rng=torch.get_rng_state(), **extra)

    run.started = True  # from here a failure keeps the run folder: its train.log tells what happened
    with stop.stop_on_signals():
        for epoch in range(start, cfg.epoch + 1):
            t0, lr = time.time(), optimizer.param_groups[0]["lr"]
            loader = make_loader(train_set, cfg, dist, epoch, skip)
            sums = train_one_epoch(model, loader, optimizer, cfg, epoch, tracker, teacher, dist, sums)
            if sums.pop("interrupted"):
                every_rank, signals = zip(*gather((sums, stop.requested()), dist))  # resume gives each rank its sums
                if dist.is_main:
                    with stop.saving():
                        checkpoint.atomic_save(snapshot(epoch - 1, step=sums["batches"], sums=list(every_rank),
                                                        top_k=saver.ranked), run.weights / "last.pth")
                barrier(dist)  # the other ranks wait for rank 0's save before they exit
                message = (f"stopped by {_who_signalled(list(signals))} in epoch {epoch} after "
                           f"{sums['batches']} steps; last.pth is written. The run is not finished: continue with the "
                           f"same command plus --resume {run.folder}")
                if dist.is_main:
                    _logger.warning(message)
                raise stop.Interrupted(message)
            train = epoch_stats(sums, alpha_at(epoch, cfg.alpha_start, cfg.alpha_end, cfg.alpha_schedule)
                                if teacher is not None else None, dist)
            sync_buffers(raw, dist)  # every rank validates the weights and BN statistics that rank 0 saves
            val = validate(net, val_loader, cfg.student_size, dist, tracker, autocast(cfg, device))
            stop_on_bad_data(tracker, any_true(tracker.exceeded(final=True), dist), final=True)
            bad = sum(gather(tracker.end_epoch(), dist))
            scheduler.step()
            skip, sums = 0, None
            if not math.isfinite(val["val_auc"]):
                raise NonFiniteError(f"val AUC is not finite in epoch {epoch}: the model outputs NaN; lower lr")
            if not dist.is_main:
                continue
            row = dict(epoch=epoch, lr=lr, **train, **val, bad_samples=bad, seconds=round(time.time() - t0, 1))
            run.log_epoch(row)  # before last.pth: a resume drops rows past its epoch, so none is doubled
            with stop.saving():
                saved = saver.save(snapshot(epoch, val_auc=val["val_auc"], step=0, sums=None), epoch, val["val_auc"])
            run.plot_curves()
            _logger.info("epoch %d: %s%s", epoch, ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                           for k, v in row.items() if k != "epoch"),
                         f" -> {saved.name}" if saved else "")
    if dist.is_main:
        _logger.info("done: best val AUC %.4f (epoch %d), %s", *saver.ranked[0], run.weights / "BEST.pth")
    finish(dist)
    return run.weights


def train_stage(run: Run, model: nn.Module, arch: str, teacher: nn.Module | None = None) -> None:
    """An entry script's training: `fit`, where a saved stop (logged with its --resume command) ends the command
    with exit status 0 (see the guide's section 8)."""
    try:
        fit(run, model, arch, teacher)
    except stop.Interrupted:
        return
