"""`make demo`: the whole DVC pipeline, offline, on the digits data, in `build/demo/`.

    python -m cifar_study.tooling.demo [--dest build/demo]

The committed params.yaml is left alone: the run happens in a fresh copy of the project whose
params carry the overrides below. The finished run is committed there, as the baseline that
`dvc exp run` experiments are compared with: `cd build/demo` afterwards to explore it with `dvc`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from cifar_study.cli import user_errors_exit
from cifar_study.tooling.workspace import PROJECT_ROOT, commit_all, create_workspace, pipeline_env

# Small enough to finish in minutes on two CPU cores, with no network. The ResNet is the study's
# own; the DenseNet is shrunk (DenseNet-BC k=12, 3×4 layers) because the full one trains at
# about 20 images/s on such a CPU. Digits are not mirror-symmetric: no flips. Why lr 0.1:
# docs/measurements-cpu.md.
DEMO_OVERRIDES = {
    "data.source": "digits",
    "epochs": 4,
    "batch_size": 64,
    "lr": 0.1,
    "warmup_epochs": 1,
    "flip": False,
    "cutout": 0,
    "densenet.growth_rate": 12,
    "densenet.blocks": [4, 4, 4],
}


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dest", type=Path, default=PROJECT_ROOT / "build" / "demo", help="workspace to (re)create"
    )
    args = parser.parse_args(argv)
    workspace = create_workspace(args.dest, DEMO_OVERRIDES)
    print(f"demo workspace: {workspace} (params overridden: {DEMO_OVERRIDES})", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"], cwd=workspace, env=pipeline_env()
    )
    if result.returncode != 0:
        print("demo failed: see the stage output above", file=sys.stderr)
        return result.returncode
    # The run as a commit: the baseline `dvc exp show` and `dvc metrics diff HEAD ...` compare to.
    commit_all(workspace, "demo: baseline run")
    print(
        f"\nDone. In {workspace}:\n"
        "  plots/comparison/report.md   the two models side by side, with charts\n"
        "  metrics/comparison.json      the same numbers as JSON\n"
        "  metrics/eval/<model>/        test metrics (DVCLive), confusion matrix data\n"
        "  metrics/train/<model>/       per-epoch training metrics (DVCLive)\n"
        "  plots/<model>/               confusion matrix, reliability diagram, worst mistakes\n"
        "  plots/samples.png            sample training images per class\n"
        "  models/<model>/              model.pt (state dict) and model.json\n"
        f"Explore: cd {workspace} && dvc metrics show && dvc plots show"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
