"""download(): https only, bounded, retried on transient failures, checksummed, all or nothing."""

from __future__ import annotations

import hashlib
import http.client
import re
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from training_helpers import FETCH_URL as URL
from training_helpers import FakeOpener, FakeResponse, http_error, install

from cifar_study.data import fetch
from cifar_study.data.fetch import download
from cifar_study.errors import DownloadError

BODY = b"the archive's bytes " * 5000
BODY_MD5 = hashlib.md5(BODY).hexdigest()


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the back-off waits instead of sleeping."""
    waits: list[float] = []
    monkeypatch.setattr(fetch.time, "sleep", waits.append)
    return waits


def test_unreachable_host_fails_fast_with_advice_and_leaves_nothing(
    tmp_path: Path, unreachable_url: str
) -> None:
    dest = tmp_path / "downloads" / "archive.tar.gz"
    start = time.monotonic()
    with pytest.raises(
        DownloadError, match=re.escape(f"could not download {unreachable_url}")
    ) as info:
        download(unreachable_url, dest, BODY_MD5, timeout=0.5, retries=2, backoff=0)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "after 2 attempts" in message
    assert "data.source" in message and "local copy" in message
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no temp file either


@pytest.mark.parametrize(
    "url", ["http://www.cs.toronto.edu/x.tar.gz", "ftp://example.com/x", "file:///etc/passwd"]
)
def test_non_https_url_is_refused_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    opener = install(monkeypatch, FakeResponse(BODY))
    dest = tmp_path / "x.tar.gz"
    with pytest.raises(DownloadError, match=re.escape(f"refusing to download {url}: only https")):
        download(url, dest, BODY_MD5)
    assert opener.calls == []
    assert not dest.exists()


def test_correct_md5_lands_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opener = install(monkeypatch, FakeResponse(BODY))
    dest = tmp_path / "downloads" / "archive.tar.gz"
    download(URL, dest, BODY_MD5, timeout=7.5)
    assert dest.read_bytes() == BODY
    assert opener.calls == [(URL, 7.5)]
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


def test_wrong_md5_raises_without_retry_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]
) -> None:
    opener = install(monkeypatch, FakeResponse(BODY), FakeResponse(BODY))
    dest = tmp_path / "downloads" / "archive.tar.gz"
    wrong = "0" * 32
    with pytest.raises(
        DownloadError,
        match=rf"{re.escape(URL)}: downloaded file has md5 {BODY_MD5}, expected {wrong}",
    ):
        download(URL, dest, wrong, backoff=0)
    assert len(opener.calls) == 1
    assert list(dest.parent.iterdir()) == []


def test_failed_download_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, FakeResponse(b"something else"))
    dest = tmp_path / "archive.tar.gz"
    dest.write_bytes(BODY)
    with pytest.raises(DownloadError, match="md5"):
        download(URL, dest, BODY_MD5)
    assert dest.read_bytes() == BODY
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]


def test_server_error_is_retried_with_doubling_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]
) -> None:
    opener = install(
        monkeypatch,
        http_error(503, "Service Unavailable"),
        http_error(502, "Bad Gateway"),
        FakeResponse(BODY),
    )
    dest = tmp_path / "archive.tar.gz"
    download(URL, dest, BODY_MD5, retries=3, backoff=1.5)
    assert dest.read_bytes() == BODY
    assert len(opener.calls) == 3
    assert no_sleep == [1.5, 3.0]


def test_server_error_on_every_attempt_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]
) -> None:
    opener = install(monkeypatch, *(http_error(503, "Service Unavailable") for _ in range(3)))
    with pytest.raises(DownloadError, match=r"after 3 attempts: HTTP Error 503"):
        download(URL, tmp_path / "a", BODY_MD5, retries=3, backoff=0)
    assert len(opener.calls) == 3
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("code", "reason"), [(404, "Not Found"), (403, "Forbidden")])
def test_client_error_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sleep: list[float], code: int, reason: str
) -> None:
    opener = install(monkeypatch, http_error(code, reason), FakeResponse(BODY))
    with pytest.raises(
        DownloadError, match=re.escape(f"could not download {URL}: HTTP {code} {reason}")
    ):
        download(URL, tmp_path / "a", BODY_MD5, retries=3, backoff=0)
    assert len(opener.calls) == 1
    assert no_sleep == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(TimeoutError("timed out"), id="timeout-on-open"),
        pytest.param(urllib.error.URLError(ConnectionRefusedError(111, "refused")), id="urlerror"),
        pytest.param(
            FakeResponse(BODY, fail_after=len(BODY) // 2, error=ConnectionResetError(104, "reset")),
            id="reset-mid-body",
        ),
        pytest.param(
            FakeResponse(BODY, fail_after=0, error=TimeoutError("read timed out")),
            id="timeout-mid-body",
        ),
    ],
)
def test_transient_failures_are_retried_and_leave_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sleep: list[float], first: object
) -> None:
    attempts: list[list[str]] = []

    class Watching(FakeOpener):
        def open(self, url: str, timeout: float) -> FakeResponse:
            attempts.append(sorted(p.name for p in tmp_path.iterdir()))
            return super().open(url, timeout)

    opener = Watching(first, FakeResponse(BODY))  # type: ignore[arg-type]
    monkeypatch.setattr(fetch, "_OPENER", opener)
    dest = tmp_path / "archive.tar.gz"
    download(URL, dest, BODY_MD5, retries=2, backoff=0)
    assert dest.read_bytes() == BODY
    assert len(opener.calls) == 2
    # The second attempt starts with only its own new temp file beside the target.
    assert len(attempts[1]) == 1 and attempts[1][0].endswith(".tmp")
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(http.client.IncompleteRead(b"partial", 100), id="incomplete-read"),
        pytest.param(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), id="ssl-eof"),
    ],
)
def test_broken_body_read_is_a_download_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sleep: list[float], error: Exception
) -> None:
    install(
        monkeypatch,
        FakeResponse(BODY, fail_after=len(BODY) // 2, error=error),
        FakeResponse(BODY, fail_after=len(BODY) // 2, error=error),
    )
    with pytest.raises(DownloadError, match=re.escape(URL)):
        download(URL, tmp_path / "a", BODY_MD5, retries=2, backoff=0)
    assert list(tmp_path.iterdir()) == []


def test_redirect_to_plain_http_is_refused() -> None:
    handler = fetch._HttpsOnlyRedirects()
    request = urllib.request.Request("https://example.invalid/a")
    with pytest.raises(urllib.error.HTTPError, match="redirect away from https refused"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://example.invalid/a")
    followed = handler.redirect_request(request, None, 302, "Found", {}, "https://mirror.invalid/a")
    assert followed is not None and followed.full_url == "https://mirror.invalid/a"


def test_a_body_shorter_than_its_content_length_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]
) -> None:
    short = FakeResponse(BODY[:1000])
    short.headers = {"Content-Length": str(len(BODY))}
    opener = install(monkeypatch, short, FakeResponse(BODY))
    download(URL, tmp_path / "a", BODY_MD5, retries=2, backoff=0)
    assert len(opener.calls) == 2
    assert (tmp_path / "a").read_bytes() == BODY
