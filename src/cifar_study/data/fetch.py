"""Download one file over https: streamed to a temporary file, checksummed, then renamed.

Unlike torchvision's downloader this never falls back to plain http, bounds every wait, retries
a few times, and never leaves a partial file where the final one belongs.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from cifar_study.errors import DownloadError
from cifar_study.fileio import atomic_path

_CHUNK = 1 << 16


def download(
    url: str,
    dest: Path,
    md5: str,
    *,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 2.0,
) -> None:
    """Fetch `url` into `dest` and check its md5; raise DownloadError when that cannot be done.

    `timeout` bounds each connection attempt and each read; `retries` counts attempts in all,
    with `backoff` seconds (doubling) between them. A checksum mismatch is not retried: the
    server sent the wrong bytes, and trying again will not mend that.
    """
    if urllib.parse.urlsplit(url).scheme != "https":
        raise DownloadError(f"refusing to download {url}: only https URLs are allowed")
    last_error: Exception | None = None
    for attempt in range(1, retries + 1):
        if last_error is not None:
            wait = backoff * 2 ** (attempt - 2)
            print(
                f"download attempt {attempt - 1}/{retries} failed ({last_error}); "
                f"retrying in {wait:g}s",
                file=sys.stderr,
            )
            time.sleep(wait)
        try:
            with atomic_path(dest) as tmp:
                digest = _stream(url, tmp, timeout)
                if digest != md5:
                    raise DownloadError(
                        f"{url}: downloaded file has md5 {digest}, expected {md5}; "
                        "nothing was kept. The server may be serving a different file."
                    )
            return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:  # the server answered: asking again gets the same answer
                raise DownloadError(
                    f"could not download {url}: HTTP {exc.code} {exc.reason}"
                ) from None
            last_error = exc
        except (OSError, http.client.HTTPException) as exc:
            # URLError, timeouts, resets, TLS errors and cut transfers: worth another try.
            last_error = exc
    raise DownloadError(
        f"could not download {url} after {retries} attempts: {last_error}. "
        "If this machine has no network, fetch the file elsewhere and point params.yaml's "
        "data.source at the local copy (the official archive or an image-folder tree)."
    )


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never from https down to plain http."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        if urllib.parse.urlsplit(newurl).scheme != "https":
            raise urllib.error.HTTPError(
                newurl, 403, "redirect away from https refused", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpsOnlyRedirects)


def _stream(url: str, path: Path, timeout: float) -> str:
    """Copy the response body into `path` with a progress bar; return its md5."""
    digest = hashlib.md5()
    with _OPENER.open(url, timeout=timeout) as response, open(path, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=Path(url).name,
            disable=None,
            file=sys.stderr,
        ) as bar:
            received = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")
    return digest.hexdigest()
