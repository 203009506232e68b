"""Classify image files with a trained model.

    python -m cifar_study.predict --model-dir models/resnet photo.jpg cat.png [--top-k 3] [--json]

Any size and mode is accepted (resized to 32×32 RGB, with a note). A file that cannot be read is
reported by name while the others are still classified; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cifar_study.cli import user_errors_exit
from cifar_study.errors import DataError
from cifar_study.inference import classify, load_trained, read_image


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="PNG or JPEG files")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("models/resnet"),
        help="folder with model.pt and model.json (default: models/resnet)",
    )
    parser.add_argument("--top-k", type=int, default=3, help="classes to show per image")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")

    model, card = load_trained(args.model_dir)
    classes = card.classes
    results, failed = [], 0
    for path in args.files:
        try:
            image, note = read_image(path)
        except DataError as exc:
            failed += 1
            results.append({"file": str(path), "error": str(exc)})
            print(f"error: {exc}", file=sys.stderr)
            continue
        probs = classify(model, card.normalization, image[None])[0]
        top = np.argsort(-probs, kind="stable")[: args.top_k]
        results.append(
            {
                "file": str(path),
                "note": note,
                "top": [{"class": classes[i], "probability": float(probs[i])} for i in top],
            }
        )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            if "top" in result:
                ranked = ", ".join(f"{t['class']} {t['probability']:.1%}" for t in result["top"])
                note = f"  ({result['note']})" if result["note"] else ""
                print(f"{result['file']}: {ranked}{note}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
