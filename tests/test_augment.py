"""On-device augmentation: each operation against its definition (torchvision's functional form
on the same drawn parameters) and its drawn parameters against the intended distribution."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torchvision.transforms.v2 import RandomErasing
from torchvision.transforms.v2 import functional as TF
from training_helpers import tiny_prepared

from cifar_study.device import DeviceSplit, resolve_runtime
from cifar_study.training import augment

CPU = resolve_runtime("cpu", "auto", channels_last=False)
DRAWS = 20_000


def pixels(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """Random float images with integer values in [0, 255], as the data path holds them."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=generator).float()


def assert_uniform(values: torch.Tensor, low: float, high: float) -> None:
    """Bounds, mean and variance of `values` as for U(low, high), to within 5 standard errors."""
    n = values.numel()
    mean, var = (low + high) / 2, (high - low) ** 2 / 12
    assert low <= values.min() and values.max() <= high
    assert abs(values.mean().item() - mean) < 5 * math.sqrt(var / n)
    # A uniform sample variance has relative standard error sqrt(0.8 / n): 5% is > 7 of them.
    assert abs(values.var().item() - var) < 0.05 * var


# -- augmentation -----------------------------------------------------------------------------


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image() -> None:
    torch.manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1
    out = augment.random_crop(x, padding=2)
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    assert out.shape == x.shape
    for i in range(2):
        windows = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_random_flip_mirrors_about_half_the_images() -> None:
    torch.manual_seed(0)
    x = torch.rand(400, 3, 4, 4)
    out = augment.random_flip(x)
    flipped = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x, strict=True)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 150 < sum(flipped) < 250


def test_alternating_flips_mirror_each_image_every_other_epoch() -> None:
    parity = torch.tensor([True, False, True])
    assert augment.alternating_flips(parity, 0).tolist() == [True, False, True]
    assert augment.alternating_flips(parity, 1).tolist() == [False, True, False]
    assert augment.alternating_flips(parity, 4).tolist() == [True, False, True]


def test_given_flips_replace_the_coin_flips() -> None:
    x = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    flips = torch.tensor([True, False, True])
    policy = augment.Augmentation(crop_padding=0, flip=True)
    before = torch.random.get_rng_state()
    out = policy(x, lambda v: v, flips=flips)
    assert torch.equal(torch.random.get_rng_state(), before)  # nothing drawn
    assert torch.equal(out, augment.flip_where(x, flips).float())
    assert torch.equal(out[1], x[1].float()) and torch.equal(out[0], x[0].flip(2).float())


def test_cutout_zeroes_at_most_a_square_per_image() -> None:
    torch.manual_seed(0)
    x = torch.ones(64, 3, 32, 32)
    out = augment.cutout(x, size=8)
    zeros_per_image = (out[:, 0] == 0).sum(dim=(1, 2))
    assert zeros_per_image.max() == 64 and zeros_per_image.min() > 0
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)  # same square in every channel


# -- colour jitter ----------------------------------------------------------------------------

TORCHVISION_JITTER = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)


def test_jitter_matches_torchvision_on_the_same_factors_and_order() -> None:
    torch.manual_seed(0)
    x = pixels(64)
    factors, order = augment.draw_jitter(64, 0.2, x.device)
    ours = augment.apply_jitter(x, factors, order)
    for i in range(64):
        expected = x[i] / 255
        for op in order[i].tolist():
            expected = TORCHVISION_JITTER[op](expected, float(factors[i, op]))
        # torchvision works on [0, 1], the data path on [0, 255]: float rounding differs only.
        assert torch.allclose(ours[i] / 255, expected, rtol=0, atol=1e-6), i


def test_jitter_keeps_pixels_in_range_and_changes_images() -> None:
    torch.manual_seed(0)
    x = pixels(32)
    out = augment.color_jitter(x, 0.2)
    assert out.min() >= 0 and out.max() <= 255
    assert not torch.allclose(out, x)


def test_jitter_factors_are_uniform_and_every_order_equally_likely() -> None:
    torch.manual_seed(0)
    factors, order = augment.draw_jitter(DRAWS, 0.2, torch.device("cpu"))
    for column in range(3):
        assert_uniform(factors[:, column], 0.8, 1.2)
    counts = {p: 0 for p in itertools.permutations(range(3))}
    for row in order.tolist():
        counts[tuple(row)] += 1
    expected = DRAWS / 6
    assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in counts.values()), counts


# -- rotation ---------------------------------------------------------------------------------


def test_rotation_matches_torchvision_exactly() -> None:
    torch.manual_seed(0)
    x = pixels(200)
    degrees = augment.draw_rotation(200, 15.0, x.device)
    ours = augment.rotate(x, degrees)
    for i in range(200):
        expected = TF.rotate(
            x[i], float(degrees[i]), interpolation=TF.InterpolationMode.NEAREST, fill=0
        )
        assert torch.equal(ours[i], expected), float(degrees[i])


def test_rotation_by_90_degrees_turns_the_image_counter_clockwise() -> None:
    x = pixels(1, size=8)
    assert torch.equal(augment.rotate(x, torch.tensor([90.0])), torch.rot90(x, 1, dims=(2, 3)))


def test_rotation_angles_are_uniform_within_the_limit() -> None:
    torch.manual_seed(0)
    assert_uniform(augment.draw_rotation(DRAWS, 15.0, torch.device("cpu")), -15.0, 15.0)


# -- random erasing ---------------------------------------------------------------------------


def test_erasing_matches_torchvision_on_the_same_rectangles() -> None:
    torch.manual_seed(0)
    x = pixels(64) - 128  # normalised images take negative values too
    top, left, height, width = augment.draw_erasing(64, 32, 32, 1.0, x.device)
    ours = augment.erase_boxes(x, top, left, height, width)
    for i in range(64):
        box = (int(top[i]), int(left[i]), int(height[i]), int(width[i]))
        assert torch.equal(ours[i], TF.erase(x[i], *box, v=torch.tensor(0.0))), box


def test_erasing_rectangles_follow_torchvisions_distribution() -> None:
    """Our batched draw and torchvision's get_params, over many draws: same rectangle sizes."""
    torch.manual_seed(0)
    top, left, height, width = augment.draw_erasing(DRAWS, 32, 32, 1.0, torch.device("cpu"))
    image = torch.zeros(3, 32, 32)
    reference = torch.tensor(
        [
            RandomErasing.get_params(
                image, scale=augment.ERASING_SCALE, ratio=augment.ERASING_RATIO, value=[0.0]
            )[2:4]
            for _ in range(DRAWS)
        ],
        dtype=torch.float64,
    )
    ours = torch.stack([height, width], dim=1).double()
    assert ((top >= 0) & (top + height <= 32) & (left >= 0) & (left + width <= 32)).all()
    assert (height > 0).all()  # p = 1 and a 32×32 image: some try always fits
    for column in range(2):
        both = torch.cat([ours[:, column], reference[:, column]])
        se = both.std().item() * math.sqrt(2 / DRAWS)
        assert abs(ours[:, column].mean() - reference[:, column].mean()) < 5 * se
    area, reference_area = ours.prod(1), reference.prod(1)
    se = torch.cat([area, reference_area]).std().item() * math.sqrt(2 / DRAWS)
    assert abs(area.mean() - reference_area.mean()) < 5 * se


def test_erasing_happens_with_probability_p() -> None:
    torch.manual_seed(0)
    _, _, height, _ = augment.draw_erasing(DRAWS, 32, 32, 0.2, torch.device("cpu"))
    erased = (height > 0).double().mean().item()
    assert abs(erased - 0.2) < 5 * math.sqrt(0.2 * 0.8 / DRAWS)


# -- the whole data path ----------------------------------------------------------------------


def test_batch_applies_the_studys_order() -> None:
    """crop → flip → jitter → rotation → normalise → erasing → cutout, drawing in that order."""
    data = tiny_prepared()
    train = data.splits["train"]
    split = DeviceSplit(train.images, train.labels, data.mean, data.std, CPU.device)
    policy = augment.Augmentation(
        crop_padding=4, flip=True, color_jitter=0.2, rotation=15.0, erasing=0.5, cutout=8
    )
    index = torch.arange(16)
    torch.manual_seed(3)
    x, _ = split.batch(index, policy)

    torch.manual_seed(3)
    expected = augment.random_flip(augment.random_crop(split.images[index], 4)).float()
    expected = augment.random_rotation(augment.color_jitter(expected, 0.2), 15.0)
    expected = (expected - split.mean) / split.std
    expected = augment.cutout(augment.random_erasing(expected, 0.5), 8)
    assert torch.equal(x, expected)
