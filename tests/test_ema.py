"""The weight average and the BatchNorm statistics measured for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cifar_study.data.prepared import evenly_spaced
from cifar_study.device import DeviceSplit, Runtime
from cifar_study.training.ema import CALIBRATION_IMAGES, WeightAverage, recalibrate_batch_norm

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False, compile=False)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.ReLU()
    )


def test_recalibration_sets_the_statistics_of_the_batches_and_draws_no_random_number() -> None:
    net = _net()
    net[1].running_mean.fill_(7.0)
    net[1].running_var.fill_(9.0)
    torch.manual_seed(1)
    batches = [torch.randn(8, 3, 6, 6) * 3 + 1 for _ in range(3)]
    rng_before = torch.get_rng_state()

    recalibrate_batch_norm(net, batches)

    assert torch.equal(torch.get_rng_state(), rng_before)  # dropout stayed off
    features = [net[0](x).detach() for x in batches]  # equal-sized batches: the mean of means
    per_batch_mean = torch.stack([f.mean((0, 2, 3)) for f in features])
    per_batch_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in features])
    torch.testing.assert_close(net[1].running_mean, per_batch_mean.mean(0))
    torch.testing.assert_close(net[1].running_var, per_batch_var.mean(0))
    assert net.training and net[1].momentum == 0.1  # mode and momentum restored


def test_the_average_gets_statistics_of_its_own_weights_not_of_the_trained_ones() -> None:
    # The trained weights grow threefold; the average (decay 0.5) sits halfway, at twice the
    # original. Its statistics must describe the doubled weights: variance 4x the original.
    model = _net()
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    split = DeviceSplit(images, np.zeros(64, np.int64), (0.5,) * 3, (0.25,) * 3, CPU.device)
    x = split.batch(torch.arange(64))[0]
    original = model[0](x).detach()

    average = WeightAverage(model, decay=0.5)
    average.update(model)  # the first update copies
    with torch.no_grad():
        model[0].weight.mul_(3)
    average.update(model)
    average.recalibrate(split, batch_size=64, runtime=CPU)

    norm = average.module[1]
    torch.testing.assert_close(norm.running_mean, 2 * original.mean((0, 2, 3)))
    torch.testing.assert_close(norm.running_var, 4 * original.var((0, 2, 3)))
    # The trained model's own statistics are left alone.
    assert torch.equal(model[1].running_var, torch.ones(4))


def test_calibration_covers_the_split_in_equal_batches_that_mix_its_order() -> None:
    n = 10_000
    images = np.zeros((n, 2, 2, 3), np.uint8)  # each image's first pixel spells its index
    images[:, 0, 0, 0], images[:, 0, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    split = DeviceSplit(images, None, (0.0,) * 3, (1 / 255,) * 3, CPU.device)
    average = WeightAverage(nn.Sequential(nn.BatchNorm2d(3)), decay=0.9)
    seen: list[torch.Tensor] = []
    average.module.register_forward_hook(lambda module, args, out: seen.append(args[0]))

    average.recalibrate(split, batch_size=1000, runtime=CPU)

    sizes = [len(x) for x in seen]
    assert max(sizes) <= 1000 and max(sizes) - min(sizes) <= 1  # no short last batch
    pixels = [x[:, :2, 0, 0].round().long() for x in seen]
    batches = [p[:, 0] * 256 + p[:, 1] for p in pixels]
    index = torch.cat(batches)
    assert len(index) == CALIBRATION_IMAGES == len(set(index.tolist()))
    assert index.min() == 0 and index.max() == n - 1  # the whole split, first to last image
    assert all(b.max() - b.min() > 0.9 * n for b in batches)  # each batch spans the split


@pytest.mark.parametrize("batch_size", [256, 1024])
def test_a_split_sorted_by_class_gets_the_statistics_of_the_whole_sample(batch_size: int) -> None:
    # Dark images then bright ones, as an image-folder source orders them: batches drawn in
    # order would each see one class and miss the variance between the two.
    n = 8_000
    images = np.where(np.arange(n) < n // 2, 50, 200).astype(np.uint8)[:, None, None, None]
    images = np.broadcast_to(images, (n, 2, 2, 3)).copy()
    split = DeviceSplit(images, None, (0.0,) * 3, (1.0,) * 3, CPU.device)
    average = WeightAverage(nn.Sequential(nn.BatchNorm2d(3)), decay=0.9)

    average.recalibrate(split, batch_size=batch_size, runtime=CPU)

    x = torch.as_tensor(images[evenly_spaced(n, CALIBRATION_IMAGES)], dtype=torch.float32) / 255
    norm = average.module[0]
    torch.testing.assert_close(norm.running_mean, x.mean((0, 1, 2)), rtol=0.02, atol=0)
    torch.testing.assert_close(norm.running_var, x.var((0, 1, 2)), rtol=0.05, atol=0)
