"""Sources: expanding files, globs and URLs; how they are shown; their limits; downloads.

A download is bounded three ways, because the server is not ours:

* bytes, counted **after** decoding (a 2 MB gzip body can inflate to gigabytes), and a
  decoded/wire ratio above :data:`MAX_INFLATE_RATIO` is refused as a decompression bomb
  (the rule Apache POI applies to OOXML members, ``ZipSecureFile.setMinInflateRatio``);
* a total deadline for the whole download (a server dripping one byte every few seconds
  never trips a per-read timeout);
* a stall timeout for each network step (connect, each read).

Redirects are followed by hand (at most :data:`MAX_REDIRECTS`), and only to http(s):
``Location: data:...`` or ``file:///etc/passwd`` is refused in one line.
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mailsift import scratch, urlsecrets
from mailsift.errors import InputError

__all__ = [
    "DEFAULT_MAX_SOURCE_BYTES",
    "DEFAULT_MAX_SOURCE_ROWS",
    "MAX_INFLATE_RATIO",
    "MAX_REDIRECTS",
    "Limits",
    "display_source",
    "download",
    "expand_sources",
    "expand_url",
    "fail",
    "is_url",
    "one_line",
]

#: 20 GB: far above any CRM export (HubSpot and Salesforce cap exports well below this).
DEFAULT_MAX_SOURCE_BYTES = 20_000_000_000
#: 100 million rows per source.
DEFAULT_MAX_SOURCE_ROWS = 100_000_000
#: Decoded bytes per wire byte above which a download is a decompression bomb (Apache
#: POI's ``MIN_INFLATE_RATIO`` of 0.01, inverted); only past :data:`_INFLATE_GRACE` bytes.
MAX_INFLATE_RATIO = 100
_INFLATE_GRACE = 16 * 1024 * 1024
MAX_REDIRECTS = 10
_DOWNLOAD_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Per-source budgets. ``None`` means unlimited (tests and benchmarks only)."""

    max_bytes: int | None = DEFAULT_MAX_SOURCE_BYTES
    max_rows: int | None = DEFAULT_MAX_SOURCE_ROWS
    stall_timeout: float = 30.0  #: seconds for each network step of a download
    deadline: float = 900.0  #: seconds for a whole download

    @classmethod
    def from_settings(cls, settings: object | None = None) -> Limits:
        if settings is None:
            from mailsift.settings import Settings

            settings = Settings()
        return cls(
            max_bytes=getattr(settings, "max_source_bytes", DEFAULT_MAX_SOURCE_BYTES),
            max_rows=getattr(settings, "max_source_rows", DEFAULT_MAX_SOURCE_ROWS),
            stall_timeout=getattr(settings, "download_stall_timeout", 30.0),
            deadline=getattr(settings, "download_timeout", 900.0),
        )

    def bytes_problem(self, size: int) -> str | None:
        if self.max_bytes is not None and size > self.max_bytes:
            return (
                f"larger than the limit of {self.max_bytes:,} bytes (MAILSIFT_MAX_SOURCE_BYTES)"
            )
        return None

    def rows_problem(self, rows: int) -> str | None:
        if self.max_rows is not None and rows > self.max_rows:
            return f"more than the limit of {self.max_rows:,} rows (MAILSIFT_MAX_SOURCE_ROWS)"
        return None


def is_url(source: str) -> bool:
    return source[:8].lower().startswith(("http://", "https://"))


def display_source(source: str) -> str:
    """The source as shown in messages and stored in ``__ms_source``.

    Paths are kept as given. URLs lose secrets (:func:`mailsift.urlsecrets.redact`): a
    password in the userinfo and the values of query parameters that look like tokens
    or signatures become ``***``; references such as ``${CRM_API_KEY}`` are kept.
    """
    return urlsecrets.redact(source) if is_url(source) else source


def resolve_secret_block(name: str) -> str:
    """The value of the Prefect Secret block ``name`` (``${secret:name}`` in a URL)."""
    from mailsift.errors import ConfigError

    try:
        from prefect.blocks.system import Secret

        return str(Secret.load(name).get())
    except Exception as exc:  # noqa: BLE001 - block missing, API down: one line, no value shown
        raise ConfigError(f"Prefect Secret block {name!r} cannot be read ({type(exc).__name__})") from None


def expand_url(url: str) -> str:
    """``url`` with its ``${ENV}`` / ``${secret:block}`` references filled in (for the
    request only: never shown, stored or logged)."""
    from mailsift.errors import ConfigError

    try:
        return urlsecrets.expand(url, resolve_secret_block)
    except ConfigError as exc:
        raise fail(url, str(exc).removeprefix(f"{display_source(url)}: ")) from None


def one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def fail(source: str, problem: object) -> InputError:
    """The one-line error of a source: ``<source shown>: <problem>``."""
    return InputError(f"{display_source(source)}: {one_line(problem)}")


def _check_url(url: str) -> None:
    import httpx

    expanded = expand_url(url)
    try:
        parsed = httpx.URL(expanded)
        parts = urlsplit(expanded)
        parts.port  # noqa: B018 - raises ValueError when out of range
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        detail = "" if expanded != url else f" ({one_line(exc, 80)})"  # never echo a secret
        raise fail(url, f"not a valid URL{detail}") from None
    if not parsed.host or any(ch.isspace() for ch in parts.netloc):
        raise fail(url, "not a valid URL (no host)" if not parsed.host else "not a valid URL")


def expand_sources(sources: Sequence[str]) -> list[str]:
    """Files, globs and http(s) URLs -> a list of sources to read.

    A glob expands to its matching files, sorted; ``~`` is expanded. URLs are kept as
    given (a malformed one is refused here). Duplicates (the same file named twice, or
    by a path and a glob) are dropped, the first mention kept. A missing file, a glob
    matching no file, or a directory raises :class:`InputError`.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [os.fspath(sources)]
    out: list[str] = []
    seen: set[str] = set()

    def add(item: str, key: str) -> None:
        if key not in seen:
            seen.add(key)
            out.append(item)

    for raw in sources:
        source = os.fspath(raw).strip()
        if not source:
            continue
        if is_url(source):
            _check_url(source)
            add(source, source)
            continue
        path = os.path.expanduser(source)
        if glob.has_magic(path):
            matches = sorted(m for m in glob.glob(path, recursive=True) if os.path.isfile(m))
            if not matches:
                raise InputError(f"{source}: no such file (the pattern matches nothing)")
            for match in matches:
                add(match, os.path.realpath(match))
        elif os.path.isdir(path):
            raise InputError(f"{source}: is a directory; give files or a glob like {source}/*.csv")
        elif os.path.isfile(path):
            add(path, os.path.realpath(path))
        else:
            raise InputError(f"{source}: no such file")
    if not out:
        raise InputError("no input: give at least one file, glob or URL")
    return out


def download(url: str, directory: str | os.PathLike[str], limits: Limits) -> tuple[Path, str | None]:
    """Stream ``url`` into a scratch file in ``directory``; returns ``(path, content type)``.

    Non-2xx, a redirect to another scheme, too many redirects, the byte cap (after
    decoding), a decompression bomb, the deadline or a stall -> :class:`InputError`.
    """
    import httpx

    suffix = "".join(Path(urlsplit(url).path).suffixes[-2:])[:20]
    suffix = re.sub(r"[^\w.-]", "", suffix)
    fd, name = scratch.make_file("download", suffix=suffix, parent=directory)
    path = Path(name)
    started = time.monotonic()
    try:
        with (
            os.fdopen(fd, "wb") as out,
            httpx.Client(
                follow_redirects=False,
                timeout=httpx.Timeout(limits.stall_timeout),
                headers={"User-Agent": "mailsift", "Accept": "*/*"},
                # runs before httpx parses a Location (which fails on data: URLs)
                event_hooks={"response": [lambda response: _check_location(url, response)]},
            ) as client,
        ):
            target: httpx.URL | str = url
            for _ in range(MAX_REDIRECTS + 1):
                with client.stream("GET", expand_url(target) if isinstance(target, str) else target) as response:
                    if response.is_redirect:
                        target = _next_hop(url, response)
                        continue
                    if not response.is_success:
                        raise fail(url, f"HTTP {response.status_code}")
                    _copy_body(url, response, out, limits, started)
                    return path, response.headers.get("content-type")
            raise fail(url, f"more than {MAX_REDIRECTS} redirects")
    except InputError:
        path.unlink(missing_ok=True)
        raise
    except httpx.TimeoutException:
        path.unlink(missing_ok=True)
        raise fail(url, f"download timed out: stalled for {limits.stall_timeout:g} s (MAILSIFT_DOWNLOAD_STALL_TIMEOUT)") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        path.unlink(missing_ok=True)
        raise fail(url, f"download failed: {type(exc).__name__}: {exc}") from None
    except BaseException:  # disk full (OSError) is the environment's, not the input's
        path.unlink(missing_ok=True)
        raise


def _check_location(url: str, response: object) -> None:
    location = getattr(response, "headers", {}).get("location")
    if getattr(response, "is_redirect", False) and location:
        head = location.strip().split("/", 1)[0]
        scheme = head.split(":", 1)[0].lower() if ":" in head else ""
        if scheme and scheme not in ("http", "https"):
            raise fail(url, f"redirected to a {scheme}: URL; only http(s) redirects are followed")


def _next_hop(url: str, response: object) -> object:
    import httpx

    assert isinstance(response, httpx.Response)
    location = response.headers.get("location", "")
    scheme = location.split(":", 1)[0].lower() if ":" in location.split("/", 1)[0] else ""
    if scheme and scheme not in ("http", "https"):
        raise fail(url, f"redirected to a {scheme}: URL; only http(s) redirects are followed")
    try:
        target = response.url.join(location)
    except (httpx.InvalidURL, ValueError) as exc:
        raise fail(url, f"redirected to an invalid URL ({one_line(exc, 80)})") from None
    if target.scheme not in ("http", "https") or not target.host:
        raise fail(url, f"redirected to a {target.scheme}: URL; only http(s) redirects are followed")
    return target


def _copy_body(url: str, response: object, out: object, limits: Limits, started: float) -> None:
    import httpx

    assert isinstance(response, httpx.Response)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and (problem := limits.bytes_problem(int(declared))):
        raise fail(url, problem)
    size = 0
    for chunk in response.iter_bytes():  # decoded (gzip, deflate, br) as they arrive
        size += len(chunk)
        if problem := limits.bytes_problem(size):
            raise fail(url, problem + ", counted after decompression")
        wire = max(response.num_bytes_downloaded, 1)
        if size > _INFLATE_GRACE and size > MAX_INFLATE_RATIO * wire:
            raise fail(
                url,
                f"decompresses more than {MAX_INFLATE_RATIO}x ({wire:,} bytes sent, "
                f"{size:,} so far): refused as a decompression bomb",
            )
        if time.monotonic() - started > limits.deadline:
            raise fail(url, f"download took longer than {limits.deadline:g} s (MAILSIFT_DOWNLOAD_TIMEOUT)")
        out.write(chunk)  # type: ignore[attr-defined]
