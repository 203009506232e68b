"""On-the-fly CIFAR-10-C corruptions: shape and determinism, severity ordering, hand-made checks."""

from __future__ import annotations

import colorsys
import io

import numpy as np
import pytest
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image
from scipy import ndimage

from cifar_study.errors import ConfigError, DataError
from cifar_study.evaluation import corruptions
from cifar_study.evaluation.corruptions import CORRUPTIONS, SEVERITIES, corrupt

NOISES = ("gaussian_noise", "shot_noise", "impulse_noise")
# Constants of make_cifar_c.py (hendrycks/robustness), written out again so that a typo in the
# module's tables fails here.
GAUSSIAN_STD = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_RATE = (500, 250, 100, 75, 50)
IMPULSE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)
BRIGHTNESS_SHIFT = (0.05, 0.1, 0.15, 0.2, 0.3)
CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)
SATURATE = ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2))
JPEG_QUALITY = (80, 65, 58, 50, 40)
PIXELATE_SIDE = (30, 28, 27, 24, 20)  # int(32 · c) for c = 0.95, 0.9, 0.85, 0.75, 0.65
GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)
DEFOCUS_ALIAS_SIGMA = (0.4, 0.5, 0.6)  # severities 1–3, whose disk radii (< 1) cover one pixel


def make_images() -> np.ndarray:
    """8 random-noise and 8 smooth colour 32×32 images (values 10–245), seeded."""
    rng = np.random.default_rng(1234)
    noisy = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    field = ndimage.gaussian_filter(rng.normal(size=(8, 32, 32, 3)), sigma=(0, 1.5, 1.5, 0))
    low = field.min(axis=(1, 2, 3), keepdims=True)
    span = np.ptp(field, axis=(1, 2, 3), keepdims=True)
    smooth = np.rint((field - low) / span * 235 + 10).astype(np.uint8)
    return np.concatenate([noisy, smooth])


IMAGES = make_images()


def uniform(rgb: tuple[int, int, int], n: int = 1, side: int = 32) -> np.ndarray:
    """n images of one colour."""
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (n, side, side, 3)).copy()


def assert_rounded(out: np.ndarray, exact: np.ndarray) -> None:
    """`out` is `exact` (in levels, float) rounded to a nearest level; ties may go either way."""
    np.testing.assert_array_less(np.abs(out.astype(np.float64) - exact), 0.5 + 1e-3)


def mean_damage(name: str, severity: int) -> float:
    """Mean absolute difference, in levels, between the corrupted and the clean test images."""
    return float(np.abs(corrupt(IMAGES, name, severity).astype(np.float64) - IMAGES).mean())


# ------------------------------------------------------------------------------ every corruption


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_new_uint8_array_of_the_same_shape(name: str, severity: int) -> None:
    images = IMAGES[:4].copy()
    out = corrupt(images, name, severity)
    assert out.shape == images.shape
    assert out.dtype == np.uint8
    assert not np.shares_memory(out, images)
    np.testing.assert_array_equal(images, IMAGES[:4])  # input untouched
    assert not np.array_equal(out, images)  # and something did happen


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_same_seed_same_output(name: str) -> None:
    for severity in SEVERITIES:
        first = corrupt(IMAGES, name, severity, seed=7)
        np.testing.assert_array_equal(first, corrupt(IMAGES, name, severity, seed=7))


@pytest.mark.parametrize("name", NOISES)
def test_noise_changes_with_the_seed(name: str) -> None:
    assert not np.array_equal(corrupt(IMAGES, name, 3, seed=0), corrupt(IMAGES, name, 3, seed=1))


@pytest.mark.parametrize("name", sorted(set(CORRUPTIONS) - set(NOISES)))
def test_each_image_is_corrupted_on_its_own(name: str) -> None:
    """Without noise, a batch gives what its images give one at a time: nothing (a blur, a
    mean) reaches across the batch axis."""
    whole = corrupt(IMAGES, name, 5)
    for i in (0, 9):
        np.testing.assert_array_equal(whole[i], corrupt(IMAGES[i : i + 1], name, 5)[0])


@pytest.mark.parametrize("name", sorted(set(CORRUPTIONS) - {"saturate"}))
def test_damage_grows_with_severity(name: str) -> None:
    """Every constant table of the reference except saturate's moves monotonically away from
    the identity (more noise, wider blur, brighter, flatter, lower quality, coarser)."""
    damage = [mean_damage(name, severity) for severity in SEVERITIES]
    assert np.all(np.diff(damage) >= 0), damage
    assert damage[-1] > damage[0], damage


def test_saturate_damage_by_regime() -> None:
    """Saturate is not monotone by definition: severities 1–2 scale HSV saturation S by 0.3 and
    0.1 (|ΔS| = 0.7·S, 0.9·S), 3–5 raise it (|ΔS| = min(0.5·S, 1 − S), min(S + 0.1, 1 − S),
    min(1.5·S + 0.2, 1 − S)). With hue and value fixed each channel moves by V·|ΔS|·k(hue), so
    damage grows within each regime, and severity 3 is always the mildest (0.5·S < 0.7·S)."""
    d1, d2, d3, d4, d5 = (mean_damage("saturate", severity) for severity in SEVERITIES)
    assert d3 < d1 < d2
    assert d3 < d4 < d5


# ------------------------------------------------------------------------------ by hand


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_of_a_uniform_image(severity: int) -> None:
    """HSV value + c, clipped at 1, hue and saturation kept (colorsys as the independent HSV)."""
    for rgb in ((200, 100, 50), (250, 20, 130), (0, 0, 0), (90, 90, 90)):
        h, s, v = colorsys.rgb_to_hsv(*(channel / 255 for channel in rgb))
        expected = np.array(colorsys.hsv_to_rgb(h, s, min(v + BRIGHTNESS_SHIFT[severity - 1], 1)))
        out = corrupt(uniform(rgb), "brightness", severity)
        assert_rounded(out, np.broadcast_to(expected * 255, out.shape))


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_by_hand(severity: int) -> None:
    """(x − mean)·c + mean with each channel's own mean (channel means 120, 60, 200)."""
    image = np.array(
        [[[0, 10, 190], [40, 30, 195]], [[200, 90, 205], [240, 110, 210]]], dtype=np.uint8
    )
    x = image.astype(np.float64)
    mean = x.mean(axis=(0, 1))
    exact = np.clip((x - mean) * CONTRAST_FACTOR[severity - 1] + mean, 0, 255)
    assert_rounded(corrupt(image[None], "contrast", severity)[0], exact)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_and_saturate_are_the_hsv_round_trip(severity: int) -> None:
    """The closed forms equal matplotlib's HSV round trip (float64), grey and black included."""
    images = IMAGES.copy()
    images[:, 0] = images[:, 0, :, :1]  # a grey row in every image
    images[:, 1, :5] = 0
    hsv = rgb_to_hsv(images / 255)
    bright = hsv.copy()
    bright[..., 2] = np.clip(bright[..., 2] + BRIGHTNESS_SHIFT[severity - 1], 0, 1)
    assert_rounded(corrupt(images, "brightness", severity), hsv_to_rgb(bright) * 255)
    factor, offset = SATURATE[severity - 1]
    saturated = hsv.copy()
    saturated[..., 1] = np.clip(saturated[..., 1] * factor + offset, 0, 1)
    assert_rounded(corrupt(images, "saturate", severity), hsv_to_rgb(saturated) * 255)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_is_a_pillow_round_trip(severity: int) -> None:
    out = corrupt(IMAGES[6:10], "jpeg_compression", severity)
    for image, got in zip(IMAGES[6:10], out, strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY[severity - 1])
        np.testing.assert_array_equal(got, np.asarray(Image.open(buffer)))


@pytest.mark.parametrize("severity", SEVERITIES)
def test_pixelate_is_a_pillow_box_resize_down_and_up(severity: int) -> None:
    side = PIXELATE_SIDE[severity - 1]
    out = corrupt(IMAGES[6:10], "pixelate", severity)
    for image, got in zip(IMAGES[6:10], out, strict=True):
        small = Image.fromarray(image).resize((side, side), Image.Resampling.BOX)
        expected = np.asarray(small.resize((32, 32), Image.Resampling.BOX))
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_blur_of_a_point(severity: int) -> None:
    """A lone white pixel spreads as the normalised sampled Gaussian g⊗g, g(k) ∝ exp(−k²/2σ²),
    |k| ≤ round(4σ), and only within its own channel."""
    sigma = GAUSSIAN_BLUR_SIGMA[severity - 1]
    image = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    image[0, 16, 16, 1] = 255
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    exact = np.zeros((32, 32, 3))
    exact[16 - radius : 17 + radius, 16 - radius : 17 + radius, 1] = 255 * np.outer(taps, taps)
    assert_rounded(corrupt(image, "gaussian_blur", severity)[0], exact)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_defocus_blur_of_a_point(severity: int) -> None:
    """A lone white pixel spreads as the reference's kernel. Radii 0.3–0.5 (severities 1–3) cover
    one pixel, so the kernel is the alias blur alone, t⊗t with t ∝ (e, 1, e), e = exp(−1/2σ²);
    radius 1 is a plus of five 1/5 taps and radius 1.5 a 3×3 box of 1/9 (their alias blurs,
    sigma 0.2 and 0.1, leave < 1e-5 outside)."""
    image = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    image[0, 10, 20] = 255
    kernel = np.zeros((3, 3))
    if severity <= 3:
        e = np.exp(-1 / (2 * DEFOCUS_ALIAS_SIGMA[severity - 1] ** 2))
        taps = np.array([e, 1, e]) / (1 + 2 * e)
        kernel = np.outer(taps, taps)
    elif severity == 4:
        kernel[1, :] = kernel[:, 1] = 1 / 5
    else:
        kernel[:] = 1 / 9
    exact = np.zeros((32, 32, 3))
    exact[9:12, 19:22] = 255 * kernel[..., None]
    assert_rounded(corrupt(image, "defocus_blur", severity)[0], exact)


@pytest.mark.parametrize("name", ("defocus_blur", "gaussian_blur"))
def test_blurs_leave_a_uniform_image_alone(name: str) -> None:
    """The borders are reflected or extended, not padded with black."""
    image = uniform((200, 37, 5), n=2)
    for severity in SEVERITIES:
        np.testing.assert_array_equal(corrupt(image, name, severity), image)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_noise_has_the_stated_std(severity: int) -> None:
    """On mid-grey (5σ from either clip) over 196,608 values the sample std is within 2% of c:
    its own sampling error is 0.16%, rounding to levels adds < 0.1%."""
    grey = uniform((128, 128, 128), n=64)
    delta = (corrupt(grey, "gaussian_noise", severity).astype(np.float64) - 128) / 255
    assert delta.std() == pytest.approx(GAUSSIAN_STD[severity - 1], rel=0.02)
    assert abs(delta.mean()) < 0.002


@pytest.mark.parametrize("severity", SEVERITIES)
def test_shot_noise_has_poisson_variance(severity: int) -> None:
    """A uniform intensity x becomes Poisson(λx)/λ: mean x, variance x/λ. Over 196,608 values the
    variance is within 3% (sampling error ≤ 0.35%; the clip at 1 is ≥ 6.7σ away)."""
    x = 102 / 255
    rate = SHOT_RATE[severity - 1]
    out = corrupt(uniform((102, 102, 102), n=64), "shot_noise", severity).astype(np.float64) / 255
    assert out.var() == pytest.approx(x / rate, rel=0.03)
    assert out.mean() == pytest.approx(x, abs=0.002)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_impulse_noise_flips_the_stated_fraction(severity: int) -> None:
    """Each value (pixel and channel) becomes 0 or 255, half and half, with probability c; on
    values 1–254 all such flips show. Tolerance 5 binomial standard errors over 196,608 values."""
    amount = IMPULSE_AMOUNT[severity - 1]
    rng = np.random.default_rng(5)
    images = rng.integers(1, 255, (64, 32, 32, 3), dtype=np.uint8)
    out = corrupt(images, "impulse_noise", severity)
    changed = out != images
    tolerance = 5 * np.sqrt(amount * (1 - amount) / images.size)
    assert changed.mean() == pytest.approx(amount, abs=tolerance)
    assert set(np.unique(out[changed])) == {0, 255}
    salt = (out[changed] == 255).mean()
    assert salt == pytest.approx(0.5, abs=5 * 0.5 / np.sqrt(changed.sum()))


# ------------------------------------------------------------------------------ bad arguments


def test_unknown_corruption_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'frost'.*gaussian_noise.*pixelate"):
        corrupt(IMAGES, "frost", 1)


@pytest.mark.parametrize("severity", [0, 6, "3", 2.0, True])
def test_bad_severity_is_named(severity: object) -> None:
    with pytest.raises(ConfigError, match=rf"{severity!r}.*1, 2, 3, 4, 5"):
        corrupt(IMAGES, "contrast", severity)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "images", [IMAGES.astype(np.float32), IMAGES[0], IMAGES[..., :1]], ids=["float", "3d", "grey"]
)
def test_images_must_be_nhwc_uint8_rgb(images: np.ndarray) -> None:
    with pytest.raises(DataError, match="N×H×W×3 uint8"):
        corrupt(images, "contrast", 1)


def test_every_corruption_params_yaml_may_name_has_an_implementation() -> None:
    assert set(corruptions._FUNCTIONS) == set(CORRUPTIONS)
