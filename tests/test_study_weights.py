"""Converting the study's own checkpoints: its layout, written here independently of this
project's ResNet, must convert to a model folder whose outputs are the study model's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cifar_study import predict, study_weights
from cifar_study.data.prepared import prepare
from cifar_study.data.raw import RawDataset
from cifar_study.inference import load_trained
from cifar_study.stages import evaluate


class StudyBlock(nn.Module):
    """The study's BasicBlock, with its attribute names."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class StudyResNet(nn.Module):
    """The study's network as its resnet_model.py lays it out (conv1/bn1, layer1..4, fc)."""

    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        planes, layers = width, []
        for index in range(4):
            out = width * 2**index
            stride = 1 if index == 0 else 2
            layers.append(nn.Sequential(StudyBlock(planes, out, stride), StudyBlock(out, out, 1)))
            planes = out
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(self.dropout(out))


@pytest.fixture
def study_model() -> StudyResNet:
    torch.manual_seed(0)
    model = StudyResNet()
    # Trained-looking BatchNorm statistics, so that eval mode is not the identity.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_the_study_layout_has_the_parameter_count_it_reports(study_model: StudyResNet) -> None:
    assert sum(p.numel() for p in study_model.parameters()) == 2_797_610
    assert len(study_model.state_dict()) == 122


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model_state_dict"])
def test_converted_weights_give_the_study_models_outputs(
    tmp_path: Path, study_model: StudyResNet, wrapper: str | None
) -> None:
    state = study_model.state_dict()
    saved = state if wrapper is None else {wrapper: state, "epoch": torch.tensor(299)}
    torch.save(saved, tmp_path / "study.pth")
    assert study_weights.main([str(tmp_path / "study.pth"), "--out", str(tmp_path / "m")]) == 0

    model, card = load_trained(tmp_path / "m")
    assert card.classes[0] == "airplane" and card.parameters == 2_797_610
    assert card.normalization.std == (0.2470, 0.2435, 0.2616)
    assert card.training is None and card.architecture.dropout == 0.2
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), study_model(x), rtol=0, atol=1e-5)


def test_data_parallel_prefixes_are_removed(tmp_path: Path, study_model: StudyResNet) -> None:
    state = {f"module.{k}": v for k, v in study_model.state_dict().items()}
    torch.save(state, tmp_path / "dp.pth")
    assert study_weights.main([str(tmp_path / "dp.pth"), "--out", str(tmp_path / "m")]) == 0


def test_the_converted_folder_records_its_source(tmp_path: Path, study_model: StudyResNet) -> None:
    torch.save(study_model.state_dict(), tmp_path / "study.pth")
    study_weights.main([str(tmp_path / "study.pth"), "--out", str(tmp_path / "m")])
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    assert info["converted_from"]["checkpoint"].endswith("study.pth")
    assert len(info["converted_from"]["sha256"]) == 64


@pytest.mark.parametrize("out", [".", "models"])
def test_a_folder_it_did_not_write_is_never_replaced(
    tmp_path: Path,
    study_model: StudyResNet,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    out: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save(study_model.state_dict(), "study.pth")
    Path("models/resnet").mkdir(parents=True)
    Path("models/resnet/model.json").write_text("{}")
    before = sorted(p.as_posix() for p in Path().rglob("*"))
    assert study_weights.main(["study.pth", "--out", out]) == 1
    assert sorted(p.as_posix() for p in Path().rglob("*")) == before  # nothing deleted
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: ") and err.count("\n") == 1


def _refusal(tmp_path: Path, state: object, capsys: pytest.CaptureFixture[str]) -> str:
    torch.save(state, tmp_path / "bad.pth")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text("previous model")
    assert study_weights.main([str(tmp_path / "bad.pth"), "--out", str(tmp_path / "m")]) == 1
    assert (tmp_path / "m" / "model.json").read_text() == "previous model"  # nothing replaced
    return capsys.readouterr().err


def test_another_width_is_refused_naming_the_first_mismatching_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refusal(tmp_path, StudyResNet(width=16).state_dict(), capsys)
    assert "'conv1.weight' has shape [16, 3, 3, 3]" in err and "[32, 3, 3, 3]" in err


def test_a_missing_tensor_is_refused_naming_it(
    tmp_path: Path, study_model: StudyResNet, capsys: pytest.CaptureFixture[str]
) -> None:
    state = study_model.state_dict()
    del state["layer2.0.bn1.running_var"]
    err = _refusal(tmp_path, state, capsys)
    assert "where the study's ResNet has 'layer2.0.bn1.running_var'" in err


def test_an_extra_tensor_is_refused_naming_it(
    tmp_path: Path, study_model: StudyResNet, capsys: pytest.CaptureFixture[str]
) -> None:
    state = {**study_model.state_dict(), "projection.weight": torch.zeros(2)}
    assert "unexpected tensor 'projection.weight'" in _refusal(tmp_path, state, capsys)


def test_something_other_than_a_state_dict_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "holds no state dict" in _refusal(tmp_path, [1, 2, 3], capsys)


def test_a_file_that_is_not_a_checkpoint_is_named_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    assert study_weights.main([str(tmp_path / "notes.pth"), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'notes.pth'} is not a torch file")
    assert err.count("notes.pth") == 1


def test_a_missing_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    assert study_weights.main([str(tmp_path / "nope.pth"), "--out", str(tmp_path / "m")]) == 1
    assert capsys.readouterr().err.strip().endswith("nope.pth: no such file")


def test_evaluate_and_predict_run_on_converted_weights(
    tmp_path: Path, study_model: StudyResNet, capsys: pytest.CaptureFixture[str]
) -> None:
    with torch.no_grad():
        study_model.fc.weight *= 5  # larger logits: the loss shows how inputs were scaled
    torch.save(study_model.state_dict(), tmp_path / "study.pth")
    study_weights.main([str(tmp_path / "study.pth"), "--out", str(tmp_path / "m")])
    rng = np.random.default_rng(0)
    labels = np.arange(20) % 10
    images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    raw = RawDataset(study_weights.CIFAR10_CLASSES, images, labels, images, labels)
    prepare(raw, tmp_path / "prepared", 0.0, 0)
    (tmp_path / "params.yaml").write_text("eval_batch_size: 8\nprecision: fp32\n")
    evaluate_argv = ["--model-dir", str(tmp_path / "m"), "--params", str(tmp_path / "params.yaml")]
    evaluate_argv += ["--data", str(tmp_path / "prepared"), "--live", str(tmp_path / "eval")]
    assert evaluate.main([*evaluate_argv, "--plots", str(tmp_path / "plots")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["parameters"] == 2_797_610
    # Normalised with the study's constants (model.json), not this data's measured ones.
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(study_weights.STUDY_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(study_weights.STUDY_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = study_model((x - mean) / std)
    nll = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels)).item()
    assert metrics["test"]["loss"] == pytest.approx(nll, rel=1e-4)
    assert metrics["test"]["acc"] == pytest.approx((logits.argmax(1).numpy() == labels).mean())

    Image.fromarray(images[0]).save(tmp_path / "x.png")
    capsys.readouterr()
    assert (
        predict.main(["--model-dir", str(tmp_path / "m"), str(tmp_path / "x.png"), "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)


def test_evaluate_refuses_data_with_other_classes(
    tmp_path: Path, study_model: StudyResNet, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save(study_model.state_dict(), tmp_path / "study.pth")
    study_weights.main([str(tmp_path / "study.pth"), "--out", str(tmp_path / "m")])
    labels = np.arange(20) % 10
    images = np.zeros((20, 32, 32, 3), dtype=np.uint8)
    classes = tuple(f"digit{i}" for i in range(10))
    prepare(RawDataset(classes, images, labels, images, labels), tmp_path / "prepared", 0.0, 0)
    argv = ["--model-dir", str(tmp_path / "m"), "--data", str(tmp_path / "prepared")]
    argv += ["--live", str(tmp_path / "eval"), "--plots", str(tmp_path / "plots")]
    (tmp_path / "params.yaml").write_text("{}\n")
    assert evaluate.main([*argv, "--params", str(tmp_path / "params.yaml")]) == 1
    assert "evaluate it on the data it was trained for" in capsys.readouterr().err
