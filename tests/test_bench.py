"""The benchmark scripts run, on tiny sizes on the CPU, so that they cannot rot unnoticed."""

from __future__ import annotations

import functools
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from PIL import Image
from training_helpers import TINY_PIPELINE, build_image_tree, make_tar, tiny_raw

from cifar_study.config import ConfigError
from cifar_study.data.prepared import prepare
from cifar_study.device import resolve_runtime
from cifar_study.tooling.workspace import create_workspace, pipeline_env

BENCH = Path(__file__).resolve().parents[1] / "bench"


def script(name: str) -> dict[str, Any]:
    """Run bench/<name> as `python bench/<name>` would: bench/ importable, for its shared pieces."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return runpy.run_path(str(BENCH / name))


def test_augment_cost_prints_every_operation(capsys: pytest.CaptureFixture[str]) -> None:
    script("augment_cost.py")["main"](["--batch-size", "8", "--repeats", "1", "--width", "4"])
    out = capsys.readouterr().out
    for name in ("crop", "flip", "colour jitter", "rotation", "random erasing", "all of them"):
        assert name in out


def test_jpeg_quality_reads_libjpegs_quality_and_subsampling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = build_image_tree(tmp_path / "tree")  # 15 images, every other one a Pillow JPEG
    Image.new("RGB", (32, 32), (9, 99, 199)).save(tree / "extra.jpg", quality=90, subsampling=0)
    archive = make_tar(tree, tmp_path / "copy.tar.gz")
    main = script("jpeg_quality.py")["main"]
    assert main([str(archive), "--every", "1"]) == 0
    out = capsys.readouterr().out
    assert "7 JPEG files" in out  # 6 in the tree and the extra one
    assert "quality 75, chroma 4:2:0: 6" in out  # Pillow's defaults
    assert "quality 90, chroma 4:4:4: 1" in out
    assert main([str(tree), "--every", "7"]) == 0
    assert "read 1:" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "no JPEG files" in capsys.readouterr().err


def test_jpeg_recompress_writes_every_jpeg_at_the_quality_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = build_image_tree(tmp_path / "tree")  # 15 images, every other one a Pillow JPEG
    archive = make_tar(tree, tmp_path / "copy.tar.gz")
    main = script("jpeg_recompress.py")["main"]
    dest = tmp_path / "q40"
    assert main([str(archive), str(dest), "--quality", "40"]) == 0
    written = sorted(p.relative_to(dest) for p in dest.rglob("*.jpg"))
    assert written == sorted(p.relative_to(tree) for p in tree.rglob("*.jpg"))
    assert not dest.with_name("q40.partial").exists()
    assert script("jpeg_quality.py")["main"]([str(dest), "--every", "1"]) == 0
    assert "quality 40, chroma 4:2:0: 6" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # never over an existing folder
        main([str(archive), str(dest), "--quality", "40"])
    with pytest.raises(SystemExit):
        main([str(archive), str(tmp_path / "q0"), "--quality", "0"])
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), str(tmp_path / "none"), "--quality", "40"]) == 1
    assert "no JPEG files" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_gpu_benchmark_runs_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare(tiny_raw(n_train=12), tmp_path / "prepared", val_size=0.25, seed=0)
    tiny = "--device cpu --images 32 --batch-size 8 --tiny --modes eager --precisions fp32"
    quick = "--epochs 1 --steps 1 --target 0 --budget-s 60"
    script("gpu.py")["main"]([*tiny.split(), *quick.split(), "--data", str(tmp_path / "prepared")])
    out = capsys.readouterr().out
    for model in ("resnet", "densenet"):
        assert f"{model}: training images/s" in out
    assert out.count("eager   fp32") == 2 and out.count("forward + backward + update") == 2
    assert "reached 0% validation accuracy after epoch 1" in out


def test_densenet_profile_prints_a_row_per_model_and_setting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    script("densenet_profile.py")["main"](
        ["--batch-size", "4", "--steps", "1", "--tiny", "--precisions", "fp32"]
    )
    rows = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith(("dense", "res"))
    ]
    assert len(rows) == 4  # two models × (NCHW, channels_last)
    assert all(line.count("%") == 5 for line in rows)


def test_densenet_profile_defaults_to_the_precisions_this_device_has(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        script("densenet_profile.py")["main"](["--batch-size", "2", "--steps", "1", "--tiny"]) == 0
    )
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    half = resolve_runtime("cpu", "auto", False).precision_name  # fp32 where none is native
    assert {row[1] for row in rows} == {"fp32", half}


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("augment_cost.py", ["--repeats", "0"]),
        ("densenet_profile.py", ["--steps", "0"]),
        ("densenet_profile.py", ["--precisions", "fp8"]),
        ("gpu.py", ["--images", "-5"]),
        ("train_throughput.py", ["--runs", "0"]),
    ],
)
def test_bench_scripts_refuse_bad_counts_and_choices(
    name: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        script(name)["main"](args)
    assert exited.value.code == 2
    assert "error: argument" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without")
@pytest.mark.parametrize("name", ["gpu.py", "densenet_profile.py"])
def test_bench_scripts_refuse_a_missing_gpu_in_one_line(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert script(name)["main"](["--device", "cuda", "--tiny"]) == 1
    assert capsys.readouterr().err == (
        "error: device = 'cuda', but no CUDA device is available; use auto/cpu\n"
    )


def test_train_throughput_prints_both_loops(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        script("train_throughput.py")["main"](
            ["--batch-size", "8", "--images", "16", "--runs", "1"]
        )
        == 0
    )
    assert "speed-up: " in capsys.readouterr().out


def test_recipe_sweep_applies_overrides_and_refuses_unknown_keys() -> None:
    overridden = script("recipe_sweep.py")["overridden"]
    params = {"lr": 0.4, "resnet": {"dropout": 0.0}}
    assert overridden(params, "lr=0.2 resnet.dropout=0.1") == {
        "lr": 0.2,
        "resnet": {"dropout": 0.1},
    }
    with pytest.raises(ConfigError, match="no key 'lrr'"):
        overridden({"lr": 0.4}, "lrr=0.2")


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        (["base", "lr=0.2", "lr=0.2"], "each variant must differ"),
        (["base", "lr=-1"], r"variant 'lr=-1'.*lr"),
        (["resnet.widht=8"], "no key 'resnet.widht'"),
        (["base", "--base", "epochs=0"], r"--base 'epochs=0'.*epochs"),
        (["base", "--recipe", "nowhere"], r"--recipe 'nowhere': no recipe file .*short20"),
    ],
)
def test_recipe_sweep_checks_every_variant_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], variants: list[str], message: str
) -> None:
    argv = [*variants, "--data", str(tmp_path), "--out", str(tmp_path / "sweep")]
    assert script("recipe_sweep.py")["main"](argv) == 1
    assert re.match(f"error: .*{message}", capsys.readouterr().err)
    assert not (tmp_path / "sweep").exists()  # nothing started


@pytest.mark.parametrize(
    ("args", "val_size", "message"),
    [
        (["--params", "missing.yaml"], 0.25, "params file not found: missing.yaml"),
        (["--model", "vgg"], 0.25, "known models: densenet, resnet"),
        ([], 0, "has no validation split to choose on"),
        (["--data", "nowhere"], 0.25, r"nowhere/dataset\.json is missing"),
    ],
)
def test_recipe_sweep_checks_its_inputs_before_training(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    val_size: float,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    prepare(tiny_raw(n_train=12), tmp_path / "prepared", val_size=val_size, seed=0)
    argv = ["base", "--data", "prepared", "--out", "sweep", *args]
    assert script("recipe_sweep.py")["main"](argv) == 1
    assert re.match(f"error: .*{message}", capsys.readouterr().err)
    assert not (tmp_path / "sweep").exists()  # nothing started


def test_recipe_sweep_fails_when_no_variant_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare(tiny_raw(n_train=12), tmp_path / "prepared", val_size=0.25, seed=0)
    variant = "batch_size=512"  # more than the 9 training images: the train stage refuses it
    with pytest.raises(
        SystemExit, match=r"no variant finished \(the budget ran out, or each failed\)"
    ):
        script("recipe_sweep.py")["main"](
            [variant, "--data", str(tmp_path / "prepared"), "--out", str(tmp_path / "sweep")]
        )
    assert capsys.readouterr().out.splitlines()[-1].split()[-1] == "1"  # its exit status
    assert "batch_size" in (tmp_path / "sweep" / "v0" / "train.log").read_text()


def test_recipe_sweep_starts_from_the_recipe_then_base_then_the_variant(tmp_path: Path) -> None:
    (tmp_path / "fast.yaml").write_text("lr: 0.3\nepochs: 4\nresnet.dropout: 0.1\n")
    params = {"lr": 0.4, "epochs": 9, "seed": 0, "resnet": {"dropout": 0.0}}
    checked = script("recipe_sweep.py")["checked_variants"]
    plans = checked(params, ["base", "lr=0.2"], "epochs=3 lr=0.25", "fast", tmp_path)
    assert plans == {
        "base": {"lr": 0.25, "epochs": 3, "seed": 0, "resnet": {"dropout": 0.1}},
        "lr=0.2": {"lr": 0.2, "epochs": 3, "seed": 0, "resnet": {"dropout": 0.1}},
    }
    assert params["lr"] == 0.4  # the params themselves are left as they were


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ("slow", r"--recipe 'slow': no recipe file .*slow\.yaml; recipes in .*: fast"),
        ("fast", r"--recipe 'fast': .*no key 'lrr'"),
    ],
)
def test_recipe_sweep_refuses_a_missing_or_bad_recipe(
    tmp_path: Path, recipe: str, message: str
) -> None:
    (tmp_path / "fast.yaml").write_text("lrr: 0.3\n")
    with pytest.raises(ConfigError, match=message):
        script("recipe_sweep.py")["checked_variants"]({"lr": 0.4}, ["base"], "", recipe, tmp_path)


class FakeClock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeRun:
    """A variant's process that exits 0 `duration` fake seconds after it starts."""

    def __init__(self, clock: FakeClock, duration: float) -> None:
        self.clock, self.end, self.returncode = clock, clock.now + duration, None

    def poll(self) -> int | None:
        if self.returncode is None and self.clock.now >= self.end:
            self.returncode = 0
        return self.returncode

    def terminate(self) -> None:
        if self.poll() is None:
            self.returncode = -15

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode


@pytest.mark.parametrize(
    ("budget_s", "started", "codes"),
    [(10, "abcd", [0, 0, 0, 0]), (5, "abcd", [0, 0, -15, -15]), (2, "ab", [-15, -15])],
)
def test_the_sweep_runs_at_most_so_many_at_once_within_its_budget(
    budget_s: float, started: str, codes: list[int]
) -> None:
    clock, began = FakeClock(), {}

    def start(name: str) -> FakeRun:
        began[name] = clock.now
        return FakeRun(clock, 3)

    starts = {name: functools.partial(start, name) for name in "abcd"}
    runs, stopped = script("recipe_sweep.py")["run_pool"](starts, 2, budget_s, clock, clock.sleep)
    assert not stopped
    assert "".join(runs) == started
    assert [run.returncode for run in runs.values()] == codes
    assert [began[name] for name in started] == [0, 0, 3, 3][: len(started)]


def test_a_signal_stops_the_sweeps_variants_and_is_reported() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    before = signal.getsignal(signal.SIGTERM)

    def signalled() -> subprocess.Popen:
        os.kill(os.getpid(), signal.SIGTERM)
        return subprocess.Popen(sleeper)

    starts = {"a": lambda: subprocess.Popen(sleeper), "b": signalled}
    runs, stopped = script("recipe_sweep.py")["run_pool"](starts, 2, 60)
    assert stopped
    assert runs["a"].returncode == -signal.SIGTERM
    assert all(run.poll() is not None for run in runs.values())  # nothing left running
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_search_file_takes_comments_and_options_with_their_values(tmp_path: Path) -> None:
    search = tmp_path / "search.txt"
    lines = [
        "# a search",
        "",
        "--recipe=short5",
        "--base=epochs=2 lr=0.1",
        "--parallel 3  # at once",
    ]
    lines += ["base", "seed=1 # again"]
    search.write_text("\n".join(lines))
    parsed = script("recipe_sweep.py")["build_parser"]().parse_args(
        [f"@{search}", "--data", "d", "--out", "o"]
    )
    assert (parsed.recipe, parsed.base, parsed.parallel) == ("short5", "epochs=2 lr=0.1", 3)
    assert parsed.variants == ["base", "seed=1"]


@pytest.mark.slow
def test_recipe_sweep_trains_each_variant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare(tiny_raw(n_train=12), tmp_path / "prepared", val_size=0.25, seed=0)
    params = tmp_path / "params.yaml"
    create_workspace(tmp_path / "ws", {**TINY_PIPELINE, "batch_size": 8})
    shutil.copy(tmp_path / "ws" / "params.yaml", params)
    args = ["--data", str(tmp_path / "prepared"), "--out", str(tmp_path / "sweep")]
    best = tmp_path / "best.yaml"
    script("recipe_sweep.py")["main"](
        [*args, "--params", str(params), "--apply-best", str(best), "base", "lr=0.01"]
    )
    *rows, chosen = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["base", "lr=0.01"]
    assert all(row.split()[1] == "2" and row.endswith(" 0") for row in rows)  # 2 epochs, exit 0
    trained = yaml.safe_load((tmp_path / "sweep" / "v1" / "params.yaml").read_text())
    assert trained["lr"] == 0.01
    final = {row.split()[0]: float(row.split()[2].rstrip("%")) for row in rows}
    winner = max(final, key=final.__getitem__)
    assert chosen.startswith(f"chosen on validation: {winner} (")
    winner_params = tmp_path / "sweep" / f"v{list(final).index(winner)}" / "params.yaml"
    assert best.read_text() == winner_params.read_text()


def gpu_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = ["bash", str(BENCH / "gpu_run.sh"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "usage:"),
        (("missing.tar.gz", "out"), "no archive at missing.tar.gz"),
        ((__file__, "out", "5m"), "BUDGET_S must be whole seconds, got '5m'"),
    ],
)
def test_gpu_run_refuses_bad_arguments(args: tuple[str, ...], message: str) -> None:
    done = gpu_run(*args)
    assert done.returncode == 2 and message in done.stderr


@pytest.mark.slow
def test_gpu_run_packs_a_whole_pipeline_run(tmp_path: Path) -> None:
    """On the CPU, tiny: a sweep, the chosen ResNet in full, the DenseNet cut to what fits."""
    workspace = create_workspace(tmp_path / "ws", {**TINY_PIPELINE, "epochs": 4, "batch_size": 16})
    shutil.copytree(BENCH, workspace / "bench")
    archive = make_tar(build_image_tree(tmp_path / "images", 20, 4), tmp_path / "images.tar.gz")
    env = {
        **pipeline_env(),
        "BENCH_ARGS": "--device cpu --tiny --images 64 --batch-size 16 --modes eager",
        "RESERVE_S": "30",
        "SWEEP": "base;lr=0.01",
        "SWEEP_S": "300",
    }
    done = subprocess.run(
        [
            "bash",
            str(workspace / "bench" / "gpu_run.sh"),
            str(archive),
            str(tmp_path / "out"),
            "600",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "results.tar.gz",
        "resnet.pt",
        "densenet.pt",
    }
    with tarfile.open(tmp_path / "out" / "results.tar.gz") as tar:
        names = set(tar.getnames())
        lock = yaml.safe_load(tar.extractfile("dvc.lock").read())
        sweep_log = tar.extractfile("logs/sweep.log").read().decode()
    assert {"params.yaml", "metrics/comparison.json", "logs/bench-densenet-eager.log"} <= names
    assert {"sweep/v0/variant.txt", "sweep/v1/params.yaml"} <= names
    stages = lock["stages"]
    chosen = 0.01 if "chosen on validation: lr=0.01 (" in sweep_log else TINY_PIPELINE["lr"]
    assert "chosen on validation: " in sweep_log
    assert stages["train@resnet"]["params"]["params.yaml"]["lr"] == chosen
    assert (
        stages["download"]["params"]["params.yaml"]["data.source"] == "data/external/images.tar.gz"
    )
    assert stages["train@resnet"]["params"]["params.yaml"]["epochs"] == 4
    assert 3 <= stages["train@densenet"]["params"]["params.yaml"]["epochs"] <= 4


def gpu_search(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = ["bash", str(BENCH / "gpu_search.sh"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("a", "b", "60"), "usage:"),
        (("missing.tar.gz", "out", "60", __file__), "no archive at"),
        ((__file__, "out", "1h", __file__), "BUDGET_S must be whole seconds, got '1h'"),
        ((__file__, "out", "60", "nowhere.txt"), "no search file at nowhere.txt"),
        ((__file__, "out", "60", __file__, __file__), "two searches named test_bench.py"),
    ],
)
def test_gpu_search_refuses_bad_arguments(args: tuple[str, ...], message: str) -> None:
    done = gpu_search(*args)
    assert done.returncode == 2 and message in done.stderr


def test_every_kept_search_is_a_valid_sweep() -> None:
    sweep = script("recipe_sweep.py")
    params = yaml.safe_load((BENCH.parent / "params.yaml").read_text())
    for search in sorted((BENCH / "searches").glob("*.txt")):
        parsed = sweep["build_parser"]().parse_args([f"@{search}", "--data", "d", "--out", "o"])
        plans = sweep["checked_variants"](
            params, parsed.variants, parsed.base, parsed.recipe, parsed.recipes
        )
        assert plans, search.name


@pytest.mark.slow
def test_gpu_search_runs_each_search_and_keeps_its_curves(tmp_path: Path) -> None:
    """On the CPU, tiny: the archive prepared, two searches, the DenseNet benchmark; then one
    search without the benchmark."""
    archive = make_tar(build_image_tree(tmp_path / "images", 20, 4), tmp_path / "images.tar.gz")
    tiny = "--base=epochs=2 batch_size=16 resnet.width=4 resnet.blocks=[1,1] warmup_epochs=0"
    searches = []
    for name, variants in {"one": ["base", "lr=0.01"], "two": ["seed=1"]}.items():
        searches.append(tmp_path / f"{name}.txt")
        searches[-1].write_text("\n".join(["# a tiny search", tiny, "--parallel=1", *variants]))
    env = {**os.environ, "PYTHON": sys.executable}
    env["BENCH_ARGS"] = "--device cpu --tiny --images 32 --batch-size 8 --epochs 1 --steps 1"
    env["BENCH_ARGS"] += " --modes eager --precisions fp32"
    done = gpu_search(str(archive), str(tmp_path / "out"), "600", *map(str, searches), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    table = (tmp_path / "out" / "one.txt").read_text().splitlines()
    assert [row.split()[:2] for row in table[1:3]] == [["base", "2"], ["lr=0.01", "2"]]
    with tarfile.open(tmp_path / "out" / "two.tar.gz") as tar:
        assert "./v0/live/plots/metrics/val/acc.tsv" in tar.getnames()
    assert "densenet: training images/s" in (tmp_path / "out" / "densenet-compiled.txt").read_text()

    env["BENCH_ARGS"] = "skip"  # the searches alone
    done = gpu_search(str(archive), str(tmp_path / "only"), "600", str(searches[1]), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DenseNet" not in done.stdout and (tmp_path / "only" / "two.txt").exists()
    assert not (tmp_path / "only" / "densenet-compiled.txt").exists()
