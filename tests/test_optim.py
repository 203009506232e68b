"""The optimizer and learning-rate schedules: warm-up, decay shapes, per-epoch stepping, and
which parameters get weight decay."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from training_helpers import tiny_params

from cifar_study.architectures import ResNetSettings
from cifar_study.models import build_model
from cifar_study.training.optim import build_optimizer, build_scheduler, lr_factor, orthogonalised

# -- schedules --------------------------------------------------------------------------------


def _factors(schedule: str, total: int = 100, warmup: int = 10, **kw: float) -> list[float]:
    return [
        lr_factor(
            s, total_steps=total, warmup_steps=warmup, steps_per_epoch=10, schedule=schedule, **kw
        )
        for s in range(total)
    ]


def test_warmup_rises_linearly_to_the_peak() -> None:
    f = _factors("constant")
    assert f[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert f[10:] == [1.0] * 90


def test_onecycle_and_cosine_decay_from_peak_to_near_zero() -> None:
    for schedule in ("onecycle", "cosine"):
        f = _factors(schedule)
        after = f[10:]
        assert after[0] == pytest.approx(1.0)
        assert all(a >= b for a, b in itertools.pairwise(after)), schedule
        assert after[-1] < 0.05, schedule


def test_step_schedule_multiplies_by_gamma_every_step_every_epochs() -> None:
    f = _factors("step", warmup=0, step_every=3, step_gamma=0.5)
    assert f[29] == 1.0 and f[30] == 0.5 and f[59] == 0.5 and f[60] == 0.25


def test_per_epoch_cosine_matches_torchs_scheduler_stepped_once_per_epoch() -> None:
    """The study's CosineAnnealingLR(T_max=epochs), stepped after each epoch, no warm-up."""
    params = tiny_params(epochs=6, schedule="cosine", warmup_epochs=0, schedule_per="epoch")
    ours_optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=params.lr)
    ours = build_scheduler(ours_optimizer, params, steps_per_epoch=4)
    torch_optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=params.lr)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(torch_optimizer, T_max=6)
    for _epoch in range(6):
        expected = torch_optimizer.param_groups[0]["lr"]
        for _step in range(4):
            assert ours_optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
            ours_optimizer.step()
            ours.step()
        torch_optimizer.step()
        reference.step()


def test_a_per_epoch_warm_up_rises_below_the_peak() -> None:
    # Epoch k of a W-epoch warm-up at (k + 1) / (W + 1): one warm-up epoch is one at half the lr.
    for warmup, expected in [(1, [0.5, 1.0, 2 / 3, 1 / 3]), (2, [1 / 3, 2 / 3, 1.0, 0.5])]:
        params = tiny_params(epochs=4, warmup_epochs=warmup, schedule_per="epoch")
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=params.lr)
        scheduler = build_scheduler(optimizer, params, steps_per_epoch=3)
        seen = []
        for _ in range(12):
            seen.append(optimizer.param_groups[0]["lr"] / params.lr)
            optimizer.step()
            scheduler.step()
        assert seen == pytest.approx([f for f in expected for _ in range(3)])


def test_per_step_schedule_is_unchanged_by_the_unit_option() -> None:
    params = tiny_params(epochs=3, warmup_epochs=1)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=params.lr)
    scheduler = build_scheduler(optimizer, params, steps_per_epoch=5)
    seen = []
    for _ in range(15):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    factors = [
        lr_factor(s, total_steps=15, warmup_steps=5, steps_per_epoch=5, schedule="onecycle")
        for s in range(15)
    ]
    assert seen == [params.lr * f for f in factors]


# -- optimizer --------------------------------------------------------------------------------


def test_norm_and_bias_parameters_can_be_spared_weight_decay() -> None:
    model = build_model("resnet", ResNetSettings(width=4, blocks=(1, 1)), num_classes=4)
    shared = build_optimizer(model, tiny_params())
    assert len(shared.param_groups) == 1 and shared.param_groups[0]["weight_decay"] == 5e-4
    split = build_optimizer(model, tiny_params(decay_norm_and_bias=False))
    decayed, spared = split.param_groups
    assert decayed["weight_decay"] == 5e-4 and spared["weight_decay"] == 0.0
    assert all(p.ndim == 4 or p.ndim == 2 for p in decayed["params"])  # conv and linear weights
    bn = model.stem[1]
    assert any(p is bn.weight for p in spared["params"]) and any(
        p is model.fc.bias for p in spared["params"]
    )
    assert sum(p.numel() for g in split.param_groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters()
    )


def test_norm_shifts_can_take_a_larger_lr_with_the_same_decay_per_step() -> None:
    model = build_model("resnet", ResNetSettings(width=4, blocks=(1, 1)), num_classes=4)
    shifts = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for decay_norm_and_bias, decay in ((True, 5e-4), (False, 0.0)):
        params = tiny_params(norm_bias_lr_scale=64.0, decay_norm_and_bias=decay_norm_and_bias)
        optimizer = build_optimizer(model, params)
        weights, others, fast = optimizer.param_groups
        assert weights["lr"] == others["lr"] == params.lr and weights["weight_decay"] == 5e-4
        assert others["weight_decay"] == decay and fast["weight_decay"] == decay / 64
        assert fast["lr"] == 64 * params.lr
        assert {id(p) for p in fast["params"]} == {id(p) for p in shifts}
        assert any(p is model.stem[1].weight for p in others["params"])  # scales stay put
        assert sum(len(g["params"]) for g in optimizer.param_groups) == len(
            list(model.parameters())
        )
        # The schedule scales every group alike; the lr logged is the weights' (group 0).
        scheduler = build_scheduler(optimizer, params, steps_per_epoch=5)
        for _ in range(7):
            optimizer.step()
            scheduler.step()
            assert fast["lr"] == pytest.approx(64 * weights["lr"], rel=1e-12)


# -- Muon ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 144), (144, 16), (32, 32)])
def test_orthogonalised_pushes_every_singular_value_towards_one(shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(0)
    u, _, v = torch.linalg.svd(torch.randn(shape, generator=generator), full_matrices=False)
    spread = torch.logspace(0, 2, min(shape))  # singular values 1 to 100: badly conditioned
    matrix = u @ torch.diag(spread) @ v
    values = torch.linalg.svdvals(orthogonalised(matrix))
    assert values.min() > 0.5 and values.max() < 1.3, values
    assert orthogonalised(matrix).shape == matrix.shape


_MUON_GROUPINGS = {
    "one-group": {},
    "split-groups": {"decay_norm_and_bias": False, "norm_bias_lr_scale": 8.0},
    "no-nesterov": {"nesterov": False},
}


@pytest.mark.parametrize("options", _MUON_GROUPINGS.values(), ids=_MUON_GROUPINGS)
def test_muon_orthogonalises_filters_and_steps_the_rest_as_sgd_does(options: dict) -> None:
    torch.manual_seed(0)
    model = build_model("resnet", ResNetSettings(width=4, blocks=(1, 1)), num_classes=4)
    params = tiny_params(optimizer="muon", muon_lr=0.05, muon_momentum=0.6, lr=0.1, **options)
    optimizer = build_optimizer(model, params)
    *sgd_groups, filters = optimizer.param_groups
    conv_weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert {id(p) for p in filters["params"]} == {id(p) for p in conv_weights}
    assert filters["lr"] == 0.05 and filters["momentum"] == 0.6 and filters["orthogonalise"]
    assert filters["weight_decay"] == 0.0  # the renormalisation holds the filters' scale
    assert not any(g["orthogonalise"] for g in sgd_groups)
    assert any(p is model.fc.weight for g in sgd_groups for p in g["params"])
    others = [p for g in sgd_groups for p in g["params"]]
    assert len(others) + len(conv_weights) == len(list(model.parameters()))

    # The same steps under torch's own SGD, group by group, for everything but the filters.
    reference = {id(p): p.detach().clone().requires_grad_() for p in others}
    sgd = torch.optim.SGD(
        [
            {
                "params": [reference[id(p)] for p in g["params"]],
                "lr": g["lr"],
                "weight_decay": g["weight_decay"],
            }
            for g in sgd_groups
        ],
        momentum=params.momentum,
        nesterov=params.nesterov,
    )
    images = torch.randn(8, 3, 32, 32)
    for _ in range(3):
        before = [p.detach().clone() for p in conv_weights]
        momenta = [optimizer.state[p].get("momentum_buffer") for p in conv_weights]
        momenta = [None if m is None else m.clone() for m in momenta]
        optimizer.zero_grad()
        model(images).square().mean().backward()
        for p in others:
            reference[id(p)].grad = p.grad.clone()
        grads = [p.grad.clone() for p in conv_weights]
        optimizer.step()
        sgd.step()
        for p in others:
            torch.testing.assert_close(p, reference[id(p)], rtol=0, atol=1e-7)
        for p, old, momentum, grad in zip(conv_weights, before, momenta, grads, strict=True):
            buffer = grad if momentum is None else 0.6 * momentum + grad
            update = grad + 0.6 * buffer if params.nesterov else buffer
            flat = update.reshape(len(p), -1)
            renormalised = old * len(p) ** 0.5 / old.norm()
            step = orthogonalised(flat).view_as(p) * max(1.0, len(p) / flat.size(1)) ** 0.5
            torch.testing.assert_close(p, renormalised - 0.05 * step, rtol=1e-5, atol=1e-6)
