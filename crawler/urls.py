"""URL handling: joining, the canonical form, request fingerprints, hosts.

Canonicalisation is w3lib's (the field's standard: query order, percent-encoding,
fragments), plus the two things it leaves alone: scheme case and the default port.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from urllib.parse import urljoin as _urljoin
from urllib.parse import urlsplit, urlunsplit

from w3lib.url import canonicalize_url

MAX_URL_LENGTH = 8192
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SEGMENT = r"[A-Za-z0-9_.~-]+"
# A URL already in canonical form, and fetchable: lower-case http(s) scheme and host
# name, a port other than the default, a path of unreserved characters, no dot segment,
# empty segment, query or fragment. Most links found on a site are of this shape.
_CANONICAL = re.compile(
    rf"(https?)://(?:{_LABEL}\.)*{_LABEL}(?::([1-9][0-9]{{0,4}}))?/(?:{_SEGMENT}/)*(?:{_SEGMENT})?"
)


def _already_canonical(url: str) -> bool:
    match = _CANONICAL.fullmatch(url)
    if match is None or "/." in url:
        return False
    port = match[2]
    return port is None or (int(port) <= 65535 and int(port) != _DEFAULT_PORTS[match[1]])


def urljoin(base: str, url: str) -> str:
    """`url` resolved against `base` (an absolute URL without fragment), without fragment."""
    return joiner(base).join(url)


@lru_cache(maxsize=1024)
def joiner(base: str) -> Joiner:
    """The Joiner of `base` (a page's links share one)."""
    return Joiner(base)


class Joiner:
    """Resolves links against one base URL exactly as urllib.parse.urljoin does, without
    the fragment. The base's origin and folders are found once; the common forms of link
    (a full http(s) URL, `/absolute`, `relative`, `./` and `../`) are then joined by
    concatenation, and anything else goes to urllib."""

    __slots__ = ("_folders", "_origin", "base")

    def __init__(self, base: str) -> None:
        self.base = base
        host_end = base.find("/", base.find("//") + 2)
        self._origin = base if host_end < 0 else base[:host_end]
        # The base's folder, then each parent up to the root; none if urllib would first
        # drop the empty segments of a path with "//" (left to urllib).
        folders: list[str] = []
        if host_end < 0:
            folders.append(base + "/")
        else:
            query = base.find("?", host_end)
            path_end = query if query >= 0 else len(base)
            if base.find("//", host_end, path_end) < 0:
                end = base.rfind("/", host_end, path_end) + 1
                while end > host_end:
                    folders.append(base[:end])
                    end = base.rfind("/", host_end, end - 1) + 1
        self._folders = folders

    def join(self, url: str) -> str:
        """`url` (as written in the page) resolved, without fragment."""
        href = url.partition("#")[0]
        # Concatenation resolves `href` as urllib would only without whitespace or control
        # characters (urllib strips or removes them), `;` (it drops empty path parameters),
        # a trailing `?` (an empty query is dropped) or dot segments past the leading ones.
        if href and href[-1] != "?" and href.isprintable() and " " not in href and ";" not in href:
            if href[0] == "/":
                if href[:2] != "//" and "/." not in href:
                    return self._origin + href
            elif href.startswith(("http://", "https://")):
                if "/." not in href:
                    return href
            elif ":" not in href and self._folders:
                ups = 0
                while href[:2] == "./" or href[:3] == "../":
                    if href[1] == ".":
                        ups += 1
                        href = href[3:]
                    else:
                        href = href[2:]
                if href and href[0] not in "./?" and "/." not in href and "//" not in href:
                    folders = self._folders  # "../" above the root stays there (RFC 3986)
                    return folders[ups if ups < len(folders) else -1] + href
        return _urljoin_slow(self.base, url)


@lru_cache(maxsize=4096)
def _urljoin_slow(base: str, url: str) -> str:
    try:
        joined = _urljoin(base, url)
    except ValueError:  # "http://[::1": left as it is, for check_url to refuse
        return url.partition("#")[0]
    return joined.partition("#")[0]


@lru_cache(maxsize=8192)
def canonical_url(url: str) -> str:
    """One spelling per resource: lower-case scheme and host, no default port,
    no fragment, sorted query, normalised percent-encoding."""
    if _already_canonical(url):
        return url
    return _canonical_url(url)


def _canonical_url(url: str) -> str:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    netloc = parts.netloc.lower()
    if parts.port is not None and parts.port == _DEFAULT_PORTS.get(scheme):
        netloc = netloc.rsplit(":", 1)[0]
    return canonicalize_url(urlunsplit((scheme, netloc, parts.path, parts.query, "")))


def fingerprint(method: str, url: str, body: bytes | None) -> bytes:
    """16 bytes that identify a request: method, canonical URL and body."""
    return _fingerprint(method, url, body) if body else _bodiless_fingerprint(method, url)


@lru_cache(maxsize=8192)
def _bodiless_fingerprint(method: str, url: str) -> bytes:
    return _fingerprint(method, url, None)


def _fingerprint(method: str, url: str, body: bytes | None) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(method.encode())
    digest.update(b" ")
    digest.update(canonical_url(url).encode())
    if body:
        digest.update(b" ")
        digest.update(body)
    return digest.digest()


@lru_cache(maxsize=8192)  # asked of each request as it is queued, handed out and done
def host_of(url: str) -> str:
    """The host (and port, if any) a request goes to: the unit of politeness."""
    return urlsplit(url).netloc.lower()


@lru_cache(maxsize=8192)
def check_url(url: str) -> str | None:
    """Why `url` cannot be fetched, or None if it can."""
    if len(url) > MAX_URL_LENGTH:
        return "URL too long"
    if _already_canonical(url):
        return None
    return _check_url(url)


def _check_url(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return "unparseable URL"
    if parts.scheme not in _DEFAULT_PORTS:
        return f"unsupported scheme {parts.scheme or '(none)'!r}"
    if not parts.hostname:
        return "URL has no host"
    return None


def in_domains(url: str, domains: frozenset[str]) -> bool:
    """Whether the URL's host is one of `domains` or a subdomain of one."""
    host = urlsplit(url).hostname or ""
    while True:
        if host in domains:
            return True
        dot = host.find(".")
        if dot < 0:
            return False
        host = host[dot + 1 :]
