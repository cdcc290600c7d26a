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


# Hrefs made of these characters, with no dot segment, resolve by string concatenation
# exactly as urllib.parse.urljoin would resolve them; anything else goes to urljoin.
_PLAIN_HREF = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=:@/?-]*[A-Za-z0-9._~%!$&'()*+,=:@/-]")


def urljoin(base: str, url: str) -> str:
    """`url` resolved against `base` (an absolute URL without fragment), without fragment."""
    href = url.partition("#")[0]
    if href and _PLAIN_HREF.fullmatch(href) and "/." not in href and href[0] != ".":
        if href[0] == "/":
            if href[:2] != "//":
                slash = base.find("/", base.find("//") + 2)
                return (base if slash < 0 else base[:slash]) + href
        elif href.startswith(("http://", "https://")):
            return href
        elif ":" not in href and href[0] != "?":
            path_end = min(i for i in (base.find("?"), len(base)) if i >= 0)
            slash = base.rfind("/", base.find("//") + 2, path_end)
            return (base[: slash + 1] if slash >= 0 else base + "/") + href
    return _urljoin_slow(base, url)


@lru_cache(maxsize=16384)
def _urljoin_slow(base: str, url: str) -> str:
    joined = _urljoin(base, url)
    return joined.partition("#")[0]


@lru_cache(maxsize=65536)
def canonical_url(url: str) -> str:
    """One spelling per resource: lower-case scheme and host, no default port,
    no fragment, sorted query, normalised percent-encoding."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    netloc = parts.netloc.lower()
    if parts.port is not None and parts.port == _DEFAULT_PORTS.get(scheme):
        netloc = netloc.rsplit(":", 1)[0]
    return canonicalize_url(urlunsplit((scheme, netloc, parts.path, parts.query, "")))


def fingerprint(method: str, url: str, body: bytes | None) -> bytes:
    """16 bytes that identify a request: method, canonical URL and body."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(method.encode())
    digest.update(b" ")
    digest.update(canonical_url(url).encode())
    if body:
        digest.update(b" ")
        digest.update(body)
    return digest.digest()


def host_of(url: str) -> str:
    """The host (and port, if any) a request goes to: the unit of politeness."""
    return urlsplit(url).netloc.lower()


@lru_cache(maxsize=65536)
def check_url(url: str) -> str | None:
    """Why `url` cannot be fetched, or None if it can."""
    if len(url) > MAX_URL_LENGTH:
        return "URL too long"
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
