"""How an image copy of CIFAR-10 was compressed: JPEG quality and chroma subsampling.

    python bench/jpeg_quality.py cifar10-images.tar.gz [--every 600]

Reads every `--every`-th JPEG of a tar archive (or a folder) and prints how many of them have
each (quality, chroma subsampling), and the mean size of all its JPEG files. The quality is the
libjpeg (IJG) quality whose scaled standard tables are exactly the file's, "custom" if none is.
Accuracies on such a copy are not those on the official, uncompressed images.
"""

from __future__ import annotations

import argparse
import collections
import io
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, JpegImagePlugin

# The JPEG standard's example tables (ITU-T T.81, Annex K), row by row, as Pillow reports them.
LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56), (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)  # fmt: skip
CHROMA = (
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99), (47, 66, 99, 99, 99, 99, 99, 99),
    *[(99,) * 8] * 4,
)  # fmt: skip
SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def ijg_table(base: tuple[tuple[int, ...], ...], quality: int) -> list[int]:
    """`base` scaled to `quality` (1-100) as libjpeg's jpeg_quality_scaling does, baseline."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(max((v * scale + 50) // 100, 1), 255) for row in base for v in row]


IJG_TABLES = {q: (ijg_table(LUMA, q), ijg_table(CHROMA, q)) for q in range(1, 101)}


def compression(data: bytes) -> tuple[str, str]:
    """(quality, chroma subsampling) of one JPEG file's bytes."""
    with Image.open(io.BytesIO(data)) as image:
        tables = image.quantization
        sampling = SUBSAMPLING.get(JpegImagePlugin.get_sampling(image), "other")
    found = (list(tables.get(0, [])), list(tables.get(1, [])))
    quality = next((str(q) for q, t in IJG_TABLES.items() if t == found), "custom")
    return quality, sampling


def jpeg_files(source: Path) -> Iterator[tuple[str, bytes]]:
    """(path within `source`, bytes) of each .jpg/.jpeg of a tar or folder, in a fixed order."""
    suffixes = (".jpg", ".jpeg")
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.suffix.lower() in suffixes:
                yield path.relative_to(source).as_posix(), path.read_bytes()
        return
    with tarfile.open(source) as tar:
        for member in tar:
            if member.isfile() and member.name.lower().endswith(suffixes):
                yield member.name, tar.extractfile(member).read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="a tar archive (.tar, .tar.gz) or a folder")
    parser.add_argument("--every", type=int, default=600, help="read every N-th JPEG (>= 1)")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error(f"--every must be an integer >= 1, got {args.every}")
    if not args.source.exists():
        parser.error(f"{args.source} does not exist")
    try:
        seen: collections.Counter[tuple[str, str]] = collections.Counter()
        count = size = 0
        for _, data in jpeg_files(args.source):
            if count % args.every == 0:
                seen[compression(data)] += 1
            count += 1
            size += len(data)
    except (tarfile.TarError, OSError) as exc:
        print(f"error: cannot read {args.source}: {exc}", file=sys.stderr)
        return 1
    if not count:
        print(f"error: no JPEG files in {args.source}", file=sys.stderr)
        return 1
    print(f"{count} JPEG files, {size / count:.0f} bytes each on average; read {seen.total()}:")
    for (quality, sampling), n in seen.most_common():
        print(f"  quality {quality}, chroma {sampling}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
