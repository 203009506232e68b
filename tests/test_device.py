"""The device data path: the split on the device, its one normalisation, logits for a split."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from training_helpers import tiny_prepared

from cifar_study.card import Normalization
from cifar_study.device import DeviceSplit, resolve_runtime, split_logits
from cifar_study.inference import classify
from cifar_study.stages.train import normalised_sample
from cifar_study.training.augment import Augmentation

CPU = resolve_runtime("cpu", "auto", channels_last=False)
FP32 = resolve_runtime("cpu", "fp32", channels_last=False)


def small_net(classes: int) -> nn.Module:
    """A convolution, BatchNorm (whose eval mode differs from its training mode) and a head."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, classes),
    )
    with torch.no_grad():  # running statistics unlike a fresh layer's, so eval mode shows
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net


class Recorder(nn.Module):
    """Returns its input's channel means as logits and keeps every input it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return x.mean((2, 3))


def test_device_split_normalises_with_the_given_stats() -> None:
    data = tiny_prepared()
    split = DeviceSplit(
        data.splits["train"].images, data.splits["train"].labels, data.mean, data.std, CPU.device
    )
    x, y = split.batch(torch.arange(4))
    raw = torch.from_numpy(data.splits["train"].images[:4]).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(x, (raw - 0.4) / 0.3, atol=1e-5)
    assert y.tolist() == data.splits["train"].labels[:4].tolist()


def test_a_split_without_labels_has_its_images_and_no_labels() -> None:
    images = tiny_prepared().splits["val"].images
    split = DeviceSplit(images, None, (0.5,) * 3, (0.25,) * 3, CPU.device)
    x, y = split.batch(torch.arange(len(images)))
    assert len(split) == len(images) and x.shape == (len(images), 3, 32, 32) and y is None


def test_split_logits_are_a_plain_loop_over_the_model_in_eval_mode() -> None:
    data = tiny_prepared()
    val = data.splits["val"]
    split = DeviceSplit(val.images, val.labels, data.mean, data.std, CPU.device)
    model = small_net(len(data.classes))
    assert len(split) % 5  # the last batch is a short one
    batches = list(split_logits(model, split, 5, FP32))

    assert model.training  # its mode is given back
    model.eval()
    with torch.no_grad():
        expected = []
        for start in range(0, len(split), 5):
            x, _ = split.batch(torch.arange(start, min(start + 5, len(split))))
            expected.append(model(x))
    assert [len(y) for _, y in batches] == [len(e) for e in expected]
    for (logits, _), want in zip(batches, expected, strict=True):
        assert len(logits) == 1 and logits[0].dtype == torch.float32
        assert torch.equal(logits[0], want)
    assert torch.cat([y for _, y in batches]).tolist() == val.labels.tolist()


def test_split_logits_run_the_model_on_every_view_in_order() -> None:
    data = tiny_prepared()
    val = data.splits["val"]
    split = DeviceSplit(val.images, val.labels, data.mean, data.std, CPU.device)
    model = Recorder()
    batches = list(split_logits(model, split, 5, CPU, views=lambda x: (x, x.flip(3), 2 * x)))
    for b, (logits, _) in enumerate(batches):
        x, _ = split.batch(torch.arange(5 * b, min(5 * b + 5, len(split))))
        seen = model.inputs[3 * b : 3 * b + 3]
        for got, want in zip(seen, (x, x.flip(3), 2 * x), strict=True):
            assert torch.equal(got, want)
        assert [len(view) for view in logits] == [len(x)] * 3


def test_prediction_and_whitening_normalise_an_image_as_training_does() -> None:
    data = tiny_prepared()
    train = data.splits["train"]
    split = DeviceSplit(train.images, train.labels, data.mean, data.std, CPU.device)
    index = torch.arange(len(split))
    no_augmentation = Augmentation(crop_padding=0, flip=False)
    trained_on, _ = split.batch(index, no_augmentation)  # a training batch, nothing drawn

    model = Recorder()
    probs = classify(model, Normalization(data.mean, data.std), train.images)
    assert torch.equal(torch.cat(model.inputs), trained_on)
    assert np.allclose(probs.sum(1), 1.0)
    # The whitening sample of the train stage (every image, when there are fewer than asked).
    assert torch.equal(normalised_sample(data, count=len(train.images)), trained_on)
