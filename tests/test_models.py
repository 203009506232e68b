"""Every registered model: exact size, shapes, gradients, layouts, checkpoints, the registry."""

import dataclasses
import io

import pytest
import torch
from torch import nn

from cifar_study.architectures import SETTINGS, DenseNetSettings, ModelSettings, ResNetSettings
from cifar_study.errors import ConfigError
from cifar_study.models import available_models, build_model, register_model
from cifar_study.models.init import initialise, whiten_first_conv, zero_residual_branches
from cifar_study.models.resnet import BasicBlock
from cifar_study.models.size import count_parameters, macs_per_image

# The seed study's counts (REFERENCE §1); a new model must add its own.
EXPECTED_PARAMETERS = {"resnet": 2_797_610, "densenet": 3_070_243}

# Small variants keep the behavioural tests fast; a model without one is tested at full size.
SMALL_ARCH: dict[str, ModelSettings] = {
    "resnet": ResNetSettings(width=8, blocks=(1, 1)),
    "densenet": DenseNetSettings(growth_rate=6, blocks=(2, 2)),
}

MODELS = available_models()


def small_model(name: str, num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, SMALL_ARCH.get(name), num_classes=num_classes)


def images(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", MODELS)
def test_default_parameter_count_is_exact(name: str) -> None:
    assert name in EXPECTED_PARAMETERS, f"add {name!r}'s default parameter count to the test"
    assert count_parameters(build_model(name)) == EXPECTED_PARAMETERS[name]


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_finite_with_odd_num_classes(name: str) -> None:
    model = small_model(name, num_classes=7)
    logits = model(images(batch=3))
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_nonzero_gradient(name: str) -> None:
    model = small_model(name, num_classes=7)
    targets = torch.tensor([0, 3, 6])
    nn.functional.cross_entropy(model(images(batch=3)), targets).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"
        assert param.grad.abs().sum() > 0, f"{param_name} got an all-zero gradient"


@pytest.mark.parametrize("name", MODELS)
def test_channels_last_matches_contiguous(name: str) -> None:
    model = small_model(name).eval()
    x = images()
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        actual = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip_reproduces_eval_outputs(name: str) -> None:
    model = small_model(name, seed=0)
    model(images(seed=2))  # a train-mode pass moves the BatchNorm running statistics off their init
    model.eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = small_model(name, seed=1)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    restored.eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))


def test_unknown_model_name_lists_known_ones() -> None:
    with pytest.raises(ConfigError) as error:
        build_model("vgg")
    message = str(error.value)
    assert "'vgg'" in message
    for name in MODELS:
        assert name in message


def test_registering_a_taken_name_raises() -> None:
    with pytest.raises(ValueError, match="'resnet' is already registered"):
        register_model("resnet", ResNetSettings)(nn.Identity)


def test_registering_needs_the_settings_class_the_table_declares() -> None:
    with pytest.raises(ValueError, match=r"'vgg' registered with ResNetSettings, but .* nothing"):
        register_model("vgg", ResNetSettings)(nn.Identity)
    assert "vgg" not in available_models()


def test_every_declared_model_has_a_builder() -> None:
    assert available_models() == sorted(SETTINGS)


def test_a_model_is_built_from_its_own_settings_only() -> None:
    with pytest.raises(TypeError, match="'resnet' is built from ResNetSettings, not Dense"):
        build_model("resnet", DenseNetSettings())


def test_no_classes_is_refused() -> None:
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        build_model("resnet", num_classes=0)


@pytest.mark.parametrize("name", MODELS)
def test_without_settings_a_model_takes_the_declared_defaults(name: str) -> None:
    torch.manual_seed(0)
    implicit = build_model(name, num_classes=7)
    torch.manual_seed(0)
    explicit = build_model(name, SETTINGS[name](), num_classes=7)
    assert all(
        torch.equal(a, b)
        for a, b in zip(implicit.state_dict().values(), explicit.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("training", [True, False])
def test_macs_per_image_is_positive_repeatable_and_keeps_mode(name: str, training: bool) -> None:
    model = small_model(name).train(training)
    first = macs_per_image(model)
    assert isinstance(first, int)
    assert first > 0
    assert macs_per_image(model) == first
    assert model.training is training


def test_macs_grow_with_resnet_width() -> None:
    narrow = build_model("resnet", ResNetSettings(width=8, blocks=(1, 1)))
    wide = build_model("resnet", ResNetSettings(width=16, blocks=(1, 1)))
    assert macs_per_image(wide) > macs_per_image(narrow)


@pytest.mark.parametrize("name", available_models())
def test_init_schemes_he_redraws_convolutions_and_pytorch_keeps_the_defaults(name: str) -> None:
    torch.manual_seed(0)
    built = build_model(name, num_classes=10)
    defaults = {k: v.clone() for k, v in built.state_dict().items()}
    initialise(built, "pytorch")
    assert all(torch.equal(v, defaults[k]) for k, v in built.state_dict().items())
    initialise(built, "he")
    conv = next(m for m in built.modules() if isinstance(m, nn.Conv2d))
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    # He's fan-out normal init: std sqrt(2 / fan_out); PyTorch's default is ~sqrt(1/3) of it.
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.15)
    with pytest.raises(ValueError, match="known: he, pytorch"):
        initialise(built, "xavier")


def test_zeroed_residual_branches_leave_each_block_its_shortcut_and_still_learn() -> None:
    torch.manual_seed(0)
    model = build_model("resnet", num_classes=10).eval()
    initialise(model, "he")
    zero_residual_branches(model)
    seen: list[tuple[BasicBlock, torch.Tensor, torch.Tensor]] = []
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    for block in blocks:
        block.register_forward_hook(lambda m, args, out: seen.append((m, args[0], out)))
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert len(seen) == 8  # every block, the downsampling ones with their projections included
    assert all(torch.equal(out, torch.relu(block.shortcut(x))) for block, x, out in seen)
    assert all(b.bn2.weight.grad.abs().sum() > 0 for b in blocks)  # the branches can open


def test_zeroing_residual_branches_leaves_the_densenet_alone() -> None:
    torch.manual_seed(0)
    model = build_model("densenet", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    zero_residual_branches(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", available_models())
def test_whitened_first_conv_decorrelates_its_input_patches(name: str) -> None:
    torch.manual_seed(0)
    # Correlated channels and neighbouring pixels, as in natural images.
    base = torch.randn(64, 1, 16, 16)
    images = torch.cat(
        [base, 0.8 * base + 0.2 * torch.randn(64, 1, 16, 16), torch.randn(64, 1, 16, 16)], 1
    )
    images = torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1)
    model = build_model(name, num_classes=10)
    whiten_first_conv(model, images, eps=1e-6)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    half = min(27, conv.out_channels // 2)
    assert torch.equal(conv.weight[half : 2 * half], -conv.weight[:half])
    responses = (
        nn.functional.conv2d(images, conv.weight[:half]).permute(1, 0, 2, 3).reshape(half, -1)
    )
    covariance = torch.cov(responses)
    assert torch.allclose(covariance, torch.eye(half), atol=0.05)


def test_memory_efficient_densenet_computes_the_same_function() -> None:
    """Same weights, with and without recomputation: same outputs, gradients, BN statistics."""
    torch.manual_seed(0)
    small = DenseNetSettings(growth_rate=6, blocks=(3, 3))
    plain = build_model("densenet", small, num_classes=10)
    efficient = build_model(
        "densenet", dataclasses.replace(small, memory_efficient=True), num_classes=10
    )
    efficient.load_state_dict(plain.state_dict())
    assert count_parameters(efficient) == count_parameters(plain)
    x = torch.randn(8, 3, 32, 32)
    for model in (plain, efficient):
        model.train()
        model(x).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), efficient.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name
    for (name, a), b in zip(
        plain.state_dict().items(), efficient.state_dict().values(), strict=True
    ):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-7), name  # running stats
    plain.eval(), efficient.eval()
    with torch.no_grad():
        assert torch.allclose(plain(x), efficient(x), rtol=1e-5, atol=1e-6)
