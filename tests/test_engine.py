"""The training engine: learning, lr samples within epochs, checkpoints, resume, DDP."""

from __future__ import annotations

import math
import signal
import socket
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from training_helpers import EPOCH_METRICS, tiny_params, tiny_prepared

from cifar_study.device import resolve_runtime
from cifar_study.errors import ConfigError, StudyError
from cifar_study.models import build_model
from cifar_study.training.checkpoint import load_checkpoint, save_checkpoint
from cifar_study.training.engine import (
    LR_SAMPLES,
    LR_SAMPLES_PER_EPOCH,
    NonFiniteLoss,
    Trainer,
    TrainingInterrupted,
)

CPU = resolve_runtime("cpu", "auto", channels_last=False)


# -- training ---------------------------------------------------------------------------------


def _trainer(tmp_path: Path, seed: int = 0, model: str = "resnet", **overrides) -> Trainer:
    params = tiny_params(**overrides)
    torch.manual_seed(seed)
    net = build_model(model, params.model(model).settings, num_classes=4)
    return Trainer(net, tiny_prepared(), params, CPU, tmp_path / "ckpt.pt", "fingerprint")


@pytest.mark.parametrize("model", ["resnet", "densenet"])
def test_training_learns_an_easy_task(tmp_path: Path, model: str) -> None:
    trainer = _trainer(tmp_path, model=model, epochs=4, lr=0.1, cutout=0)
    history = trainer.fit()
    assert len(history) == 4
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    assert history[-1]["val/acc"] >= 0.75  # chance is 0.25
    for metrics in history:
        assert set(metrics) == {*EPOCH_METRICS, LR_SAMPLES}


def test_lr_samples_trace_the_schedule_within_every_epoch_from_the_first_step(
    tmp_path: Path,
) -> None:
    """96 images / batch 4 = 24 steps per epoch, more than the samples: warm-up over epoch 1."""
    trainer = _trainer(tmp_path, epochs=2, batch_size=4, warmup_epochs=1)
    step = trainer._step
    seen: list[float] = []  # the lr every step ran with

    def recording(x, y):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return step(x, y)

    trainer._step = recording  # type: ignore[method-assign]
    history = trainer.fit()
    assert history[0][LR_SAMPLES][0] == [0.0, seen[0]]
    assert seen[0] == pytest.approx(trainer.params.lr / 24)  # warm-up starts near 0
    for epoch, metrics in enumerate(history):
        at = [position for position, _ in metrics[LR_SAMPLES]]
        assert len(at) == LR_SAMPLES_PER_EPOCH
        assert at == sorted(set(at)) and at[0] == epoch and at[-1] == epoch + 23 / 24
        for position, lr in metrics[LR_SAMPLES]:
            assert lr == seen[round(position * 24)]
    assert history[-1][LR_SAMPLES][-1][1] == seen[-1] == history[-1]["lr"]


def test_keeping_the_last_batch_trains_on_every_image(tmp_path: Path) -> None:
    sizes: dict[bool, list[int]] = {}
    for drop_last in (False, True):
        trainer = _trainer(tmp_path / str(drop_last), drop_last=drop_last, batch_size=40, epochs=1)
        step = trainer._step
        seen = sizes.setdefault(drop_last, [])
        trainer._step = lambda x, y, step=step, seen=seen: seen.append(len(y)) or step(x, y)
        trainer.fit()
    assert sizes == {False: [40, 40, 16], True: [40, 40]}  # 96 training images


def test_mixup_alpha_is_fixed_within_an_epoch_when_scheduled_per_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer(tmp_path, mixup_alpha=0.2, schedule_per="epoch", epochs=4)
    alphas: list[float] = []
    beta = torch.distributions.Beta
    monkeypatch.setattr(
        torch.distributions, "Beta", lambda a, b: alphas.append(float(a)) or beta(a, b)
    )
    for epoch, batch in [(0, 0), (0, 3), (1, 0), (1, 5), (3, 2)]:
        trainer.epoch, trainer.step_in_epoch = epoch, batch
        trainer._mixup_lambda()
    assert alphas == pytest.approx([0.2, 0.2, 0.15, 0.15, 0.05])


def test_alternating_flip_mirrors_each_image_in_exactly_one_of_two_epochs(
    tmp_path: Path,
) -> None:
    trainer = _trainer(tmp_path, alternating_flip=True, batch_size=16, epochs=3)
    choose = trainer._augmentation_for
    flipped: list[dict[int, bool]] = [{}, {}, {}]  # per epoch: image index -> mirrored

    def recording(index: torch.Tensor) -> Callable:
        augmentation = choose(index)
        flips = augmentation.keywords["flips"]
        flipped[trainer.epoch].update(zip(index.tolist(), flips.tolist(), strict=True))
        return augmentation

    trainer._augmentation_for = recording  # type: ignore[method-assign]
    trainer.fit()
    assert [len(f) for f in flipped] == [96, 96, 96]  # every image, every epoch
    assert all(flipped[1][i] != flipped[0][i] for i in flipped[0])
    assert flipped[2] == flipped[0]
    assert 30 < sum(flipped[0].values()) < 66  # the parity is random, not all one way


def test_alternating_flip_leaves_the_order_of_the_samples_alone(tmp_path: Path) -> None:
    orders = []
    for alternating in (False, True):
        trainer = _trainer(tmp_path / str(alternating), alternating_flip=alternating, epochs=2)
        trainer.fit()
        orders.append(trainer.order_rng.get_state())
    assert torch.equal(*orders)


def test_host_reads_do_not_grow_with_the_number_of_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU every read of a device value waits for the queued steps: the loop reads the
    running loss only every SYNC_EVERY steps and at the epoch's end, never once per step."""
    reads = 0
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original):
            nonlocal reads
            reads += 1
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    counts = []
    for batch_size in (16, 4):  # 6 and 24 steps, fewer than SYNC_EVERY
        reads = 0
        _trainer(tmp_path / str(batch_size), batch_size=batch_size, epochs=1).fit()
        counts.append(reads)
    assert counts[0] == counts[1]


def test_batch_size_larger_than_the_training_set_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size = 4096 is larger than the training set"):
        _trainer(tmp_path, batch_size=4096)


def test_checkpoint_after_every_epoch_loads_with_weights_only(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    trainer.fit()
    state = load_checkpoint(tmp_path / "ckpt.pt")
    assert state["epoch"] == 2 and state["complete"] and len(state["history"]) == 2


def _run_until_signal(trainer: Trainer, at_step: int) -> None:
    """Deliver SIGTERM's effect after `at_step` optimizer steps, as the handler would."""
    original = trainer._step
    calls = 0

    def step(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == at_step:
            trainer.stop.signum = signal.SIGTERM
        return original(*args, **kwargs)

    trainer._step = step  # type: ignore[method-assign]
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit()
    assert info.value.signum == signal.SIGTERM


def _without_timing(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [
        {k: v for k, v in m.items() if k not in ("epoch_time_s", "images_per_s")} for m in history
    ]


# Mixup and EMA on, so their state must resume too; then with alternating flip and a separate
# lr for BatchNorm's shifts as well; then with Muon's momentum for the filters.
_RESUMED_RECIPES = {
    "mixup-ema": {"mixup_alpha": 0.2, "ema_decay": 0.9},
    "muon": {"optimizer": "muon", "muon_lr": 0.05, "ema_decay": 0.9},
    "airbench": {
        "mixup_alpha": 0.2,
        "ema_decay": 0.9,
        "alternating_flip": True,
        "norm_bias_lr_scale": 8.0,
    },
}


@pytest.mark.parametrize("options", _RESUMED_RECIPES.values(), ids=_RESUMED_RECIPES)
@pytest.mark.parametrize("stop_at", [3, 6, 8])  # mid-epoch, at an epoch's last step, epoch 2
def test_resume_after_a_signal_is_bitwise_identical_on_cpu(
    tmp_path: Path, stop_at: int, options: dict
) -> None:
    recipe = {"epochs": 2, **options}  # 96 images / batch 16 = 6 steps per epoch
    straight = _trainer(tmp_path / "a", **recipe)
    expected = straight.fit()

    interrupted = _trainer(tmp_path / "b", **recipe)
    _run_until_signal(interrupted, stop_at)
    assert load_checkpoint(tmp_path / "b" / "ckpt.pt")["step_in_epoch"] == (stop_at - 1) % 6 + 1

    torch.manual_seed(1234)  # a different global RNG: the checkpoint must restore it
    resumed = _trainer(tmp_path / "b", seed=99, **recipe)  # and different initial weights
    assert resumed.resume()
    history = resumed.fit()

    assert _without_timing(history) == _without_timing(expected)
    for (name, a), b in zip(
        straight.eval_model.state_dict().items(),
        resumed.eval_model.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b), name


def test_a_finished_or_foreign_checkpoint_is_not_resumed(tmp_path: Path) -> None:
    _trainer(tmp_path).fit()
    assert not _trainer(tmp_path).resume()  # finished
    interrupted = _trainer(tmp_path)
    _run_until_signal(interrupted, 2)
    other = _trainer(tmp_path)
    other.fingerprint = "another configuration"
    assert not other.resume()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, epochs=3)
    criterion = trainer.criterion
    calls = 0

    def poisoned(logits, target):
        nonlocal calls
        calls += 1
        loss = criterion(logits, target)
        return loss * math.nan if calls == 8 else loss  # epoch 2, step 2

    trainer.criterion = poisoned  # type: ignore[assignment]
    with pytest.raises(NonFiniteLoss, match="loss became nan at epoch 2, step 2"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "ckpt.pt")
    assert state["epoch"] == 1 and state["step_in_epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize(
    ("options", "hint"),
    [
        ({}, r"by step \d.* Try a lower lr \(now 0.1\)\.$"),
        (
            {"optimizer": "muon"},
            r"by step \d.* Try a lower lr \(now 0.1\) or muon_lr \(now 0.05\)\.$",
        ),
    ],
)
def test_weights_made_non_finite_by_an_epochs_last_update_are_not_saved(
    tmp_path: Path, options: dict, hint: str
) -> None:
    # The loss of each step is computed before its update: only a look at the weights catches
    # an update that broke them on the epoch's last step.
    trainer = _trainer(tmp_path, epochs=2, lr=0.1, muon_lr=0.05, **options)
    step = trainer._step

    def last_update_breaks_the_weights(x, y):
        result = step(x, y)
        if trainer.step_in_epoch == trainer.steps_per_epoch - 1:  # before it counts this step
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(math.inf)
        return result

    trainer._step = last_update_breaks_the_weights  # type: ignore[method-assign]
    with pytest.raises(NonFiniteLoss, match=r"weights became non-finite in epoch 1, " + hint):
        trainer.fit()
    assert not (tmp_path / "ckpt.pt").exists()


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"epoch": 1}, path)

    def crash(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(StudyError, match="No space left on device; the previous one is kept"):
        save_checkpoint({"epoch": 2}, path)
    assert load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def _truncated_checkpoint(path: Path) -> None:
    save_checkpoint({"weights": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])


def _other_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")


_UNLOADABLE = {
    "pickle-payload": (
        lambda path: torch.save({"model": _Payload()}, path),
        "cannot be loaded safely: it holds pickled Python objects (print), which are refused",
    ),
    "garbage": (lambda path: path.write_bytes(b"garbage\n"), "is not a torch file"),
    "empty": (lambda path: path.write_bytes(b""), "is not a torch file"),
    "truncated": (_truncated_checkpoint, "is not a torch file"),
    "other-zip": (_other_zip, "is not a tensors-only torch checkpoint"),
}


@pytest.mark.parametrize(("write", "message"), _UNLOADABLE.values(), ids=_UNLOADABLE)
def test_an_unloadable_checkpoint_says_what_it_is_not_without_torchs_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture, write: Callable[[Path], None], message: str
) -> None:
    path = tmp_path / "ckpt.pt"
    write(path)
    with pytest.raises(StudyError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert text.startswith(f"{path} ") and message in text
    assert "weights_only" not in text and "\x1b" not in text and "\n" not in text
    assert "must never run" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (lambda path: path.write_bytes(b"garbage\n"), "is not a torch file"),
        (lambda path: torch.save([1, 2], path), "holds a list, not a training checkpoint"),
    ],
    ids=["corrupt", "not-a-dict"],
)
def test_a_checkpoint_that_cannot_be_resumed_says_to_delete_it(
    tmp_path: Path, write: Callable[[Path], None], reason: str
) -> None:
    trainer = _trainer(tmp_path)
    write(trainer.checkpoint_path)
    with pytest.raises(StudyError) as info:
        trainer.resume()
    path, text = trainer.checkpoint_path, str(info.value)
    assert text.startswith(f"{path} {reason}")
    assert text.endswith(f"; delete {path} (or move it away) to start training from scratch")


# -- data parallel ----------------------------------------------------------------------------


class _NoBatchNormNet(nn.Module):
    """BatchNorm statistics depend on the per-process batch; gradient averaging must not."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


_DDP_RECIPE = {
    "epochs": 1,
    "batch_size": 16,
    "crop_padding": 0,
    "flip": True,
    "alternating_flip": True,  # deterministic flips: each rank must mirror its shard's share
    "cutout": 0,
    "label_smoothing": 0.0,
    "precision": "fp32",
}


def _ddp_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    import os

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    runtime = resolve_runtime("cpu", "fp32", channels_last=False)
    torch.manual_seed(0)
    data = tiny_prepared(n_train=4)  # 16 images: one step of the full batch
    trainer = Trainer(
        _NoBatchNormNet(),
        data,
        tiny_params(**_DDP_RECIPE),
        runtime,
        Path(folder) / "ckpt.pt",
        "ddp",
    )
    try:
        trainer.fit()
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_with_half_batches_match_one_with_the_full_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    fp32 = resolve_runtime("cpu", "fp32", channels_last=False)
    single = Trainer(
        _NoBatchNormNet(),
        tiny_prepared(n_train=4),
        tiny_params(**_DDP_RECIPE),
        fp32,
        tmp_path / "single.pt",
        "single",
    )
    single.fit()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)

    distributed = load_checkpoint(tmp_path / "ckpt.pt")["model"]
    for name, value in single.model.state_dict().items():
        assert torch.allclose(distributed[name], value, atol=1e-6), name
    assert not torch.equal(distributed["conv.weight"], _initial_conv_weight())  # it did train


def _initial_conv_weight() -> torch.Tensor:
    torch.manual_seed(0)
    return _NoBatchNormNet().conv.weight.detach()


def test_cuda_out_of_memory_names_batch_size(tmp_path: Path, monkeypatch) -> None:
    trainer = _trainer(tmp_path)

    def out_of_memory() -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "_train_epoch", out_of_memory)
    with pytest.raises(StudyError, match=r"batch_size = 16; lower batch_size in params\.yaml"):
        trainer.fit()
