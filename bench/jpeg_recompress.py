"""Re-encode every JPEG of an image copy of CIFAR-10 at a lower quality, as a folder tree.

    python bench/jpeg_recompress.py cifar10-images.tar.gz cifar10-q50 --quality 50

What the copy's own compression costs cannot be measured without the official images; what one
more, coarser compression costs can: train on DEST (`data.source: DEST`) and compare with the
copy. Each file is decoded and saved again at `--quality` with 4:2:0 chroma subsampling (libjpeg
via Pillow), under the same path; DEST must not exist, and appears only once complete.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tarfile
from pathlib import Path

from jpeg_quality import jpeg_files
from PIL import Image

CHROMA_420 = 2  # Pillow's code for 4:2:0 subsampling


def recompress(source: Path, dest: Path, quality: int) -> int:
    """Write every JPEG of `source` re-encoded at `quality` under `dest`; return how many."""
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    count = 0
    try:
        for name, data in jpeg_files(source):
            target = partial / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(io.BytesIO(data)) as image:
                image.convert("RGB").save(target, "JPEG", quality=quality, subsampling=CHROMA_420)
            count += 1
    except BaseException:  # an unreadable file or an interrupt leaves nothing behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if count:
        partial.rename(dest)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="a tar archive (.tar, .tar.gz) or a folder")
    parser.add_argument("dest", type=Path, help="the folder to write (must not exist)")
    parser.add_argument("--quality", type=int, required=True, help="libjpeg quality, 1-95")
    args = parser.parse_args(argv)
    if not 1 <= args.quality <= 95:
        parser.error(f"--quality must be an integer from 1 to 95, got {args.quality}")
    if not args.source.exists():
        parser.error(f"{args.source} does not exist")
    if args.dest.exists():
        parser.error(f"{args.dest} exists; give a new folder")
    try:
        count = recompress(args.source, args.dest, args.quality)
    except (tarfile.TarError, OSError) as exc:
        print(f"error: cannot re-encode {args.source}: {exc}", file=sys.stderr)
        return 1
    if not count:
        print(f"error: no JPEG files in {args.source}", file=sys.stderr)
        return 1
    print(f"wrote {count} JPEG files at quality {args.quality}, chroma 4:2:0, to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
