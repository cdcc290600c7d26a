"""URL joining, canonical forms and fingerprints; decoding bodies whatever their charset."""

from __future__ import annotations

from urllib.parse import urljoin as std_urljoin

import pytest

from crawler.http import Request, Response
from crawler.tools.benchsite import page_html
from crawler.urls import canonical_url, check_url, fingerprint, in_domains, urljoin

BASES = [
    "http://example.com/a//b/c.html",
    "http://example.com/a/b/c/d.html",
    "http://example.com/a/b/?q=../x",
    "http://127.0.0.1:8123/p/17.html",
    "http://example.com",
    "http://example.com/",
    "https://example.com/a/b/c?q=1",
    "http://example.com/dir/",
    "http://example.com/a?x=/y/z",
]
HREFS = [
    "/p/1.html", "1.html", "./1.html", "../p/1.html", "../../x", "http://other.org/a",
    "https://x.org", "//cdn.example.com/a.js", "?page=2", "#top", "", "a#b", "/a/./b",
    "/a/../b", "a/b/../c", "mailto:me@example.com", "javascript:void(0)", "/a b",
    "/é", "HTTP://Example.com/A", "/a?", "/a;", "/a;p?q#f", "tel:+1", "a:b", "/p/1.html#s2",
    "..", ".", "./", "/.hidden", "x/.y", "http://h/a/../b", "/%7Euser", "/a?b=c&d=e",
    "./../a", "../../../../a", ".././b", "../a/b?c=d", "./a?b", "../", "../..", "./.x",
]  # fmt: skip


@pytest.mark.parametrize("base", BASES)
def test_urljoin_agrees_with_the_standard_library(base: str) -> None:
    for href in HREFS:
        assert urljoin(base, href) == std_urljoin(base, href).partition("#")[0], href


def test_urljoin_agrees_on_every_link_of_a_bench_page() -> None:
    base = "http://127.0.0.1:8123/p/5.html"
    response = Response(base, 200, {}, page_html(5, 100, base=base[:21]), Request(base))
    hrefs = [a.attributes["href"] or "" for a in response.css("a[href]")]
    assert len(hrefs) == 40
    for href in hrefs:
        assert response.urljoin(href) == std_urljoin(base, href).partition("#")[0]


def test_base_href_is_used_for_relative_links() -> None:
    body = b'<html><head><base href="http://example.com/root/"></head><a href="x">x</a></html>'
    response = Response("http://example.com/other/page", 200, {}, body, Request("http://e/"))
    assert response.urljoin("x") == "http://example.com/root/x"
    assert response.follow(response.css_first("a") or "").url == "http://example.com/root/x"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("HTTP://Example.COM:80/a?b=2&a=1#f", "http://example.com/a?a=1&b=2"),
        ("https://example.com:443/", "https://example.com/"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com/%7euser", "http://example.com/~user"),
        ("http://example.com/a%2fb", "http://example.com/a%2Fb"),
        ("http://example.com/a b", "http://example.com/a%20b"),
    ],
)
def test_spellings_of_one_url_have_one_canonical_form(a: str, b: str) -> None:
    assert canonical_url(a) == canonical_url(b)
    assert fingerprint("GET", a, None) == fingerprint("GET", b, None)


def test_fingerprint_tells_method_body_port_and_path_apart() -> None:
    url = "http://example.com/a"
    assert fingerprint("GET", url, None) != fingerprint("POST", url, None)
    assert fingerprint("POST", url, b"x=1") != fingerprint("POST", url, b"x=2")
    assert fingerprint("GET", url, None) != fingerprint("GET", "http://example.com:8080/a", None)
    assert fingerprint("GET", url, None) != fingerprint("GET", url + "/", None)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://example.com/", None),
        ("javascript:void(0)", "unsupported scheme"),
        ("mailto:me@example.com", "unsupported scheme"),
        ("http://", "no host"),
        ("http://[::1", "unparseable"),
        ("http://example.com:99999/", "unparseable"),
        ("http://example.com/" + "a" * 9000, "too long"),
    ],
)
def test_urls_that_cannot_be_fetched_are_named(url: str, problem: str | None) -> None:
    found = check_url(url)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_subdomains_are_in_their_domain() -> None:
    domains = frozenset({"example.com"})
    assert in_domains("http://example.com/", domains)
    assert in_domains("http://www.example.com:8080/", domains)
    assert not in_domains("http://badexample.com/", domains)
    assert not in_domains("http://example.com.evil.org/", domains)


@pytest.mark.parametrize(
    ("text", "charset", "declared"),
    [
        ("Привет, мир! Это страница на русском языке, длинная достаточно.", "cp1251", ""),
        ("Привет, мир! Это страница на русском языке, длинная достаточно.", "cp1251", "utf-8"),
        ("こんにちは世界。これは日本語のページです。文字コードの検出を試します。", "shift_jis", ""),
        ("Café crème, déjà vu, naïve façade — über Größe, señor.", "latin-1", ""),
        ("Café crème, déjà vu, naïve façade — über Größe, señor.", "latin-1", "utf-8"),
        ("plain ascii and ünïcödé", "utf-8", ""),
    ],
)
def test_pages_decode_with_a_missing_or_wrong_charset(
    text: str, charset: str, declared: str
) -> None:
    from crawler.http import decode_body

    body = f"<html><body><p>{text}</p></body></html>".encode(charset, errors="ignore")
    content_type = f"text/html; charset={declared}" if declared else "text/html"
    decoded, _ = decode_body(content_type, body)
    assert text.encode(charset, errors="ignore").decode(charset) in decoded


def test_urljoin_agrees_on_random_hrefs() -> None:
    import random

    rng = random.Random(7)
    pieces = ["a", "b.html", "..", ".", "", "/", "./", "../", "?q=1", "#f", "x:y", "%41", "~u"]
    pieces += ["//", "http://h", "https://H/", ";p", "?", "&", ";", " ", "\t", "\n", "\x00"]
    pieces += ["\\", '"', "<", ">", "'", "[", "]", "{", "|", "^", "`", "é", "\u00a0", "\u3000"]
    for _ in range(20_000):
        href = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))
        for base in BASES:
            try:
                expected = std_urljoin(base, href).partition("#")[0]
            except ValueError:  # "http://[": left as it is, for check_url to refuse
                expected = href.partition("#")[0]
            assert urljoin(base, href) == expected, (base, href)


def test_the_canonical_shortcut_agrees_with_the_full_canonical_form() -> None:
    """URLs the shortcut takes as canonical and fetchable are exactly that by w3lib's
    rules and check_url's; and it takes the common shape of link."""
    import random

    from crawler.urls import _already_canonical, _canonical_url, _check_url

    rng = random.Random(11)
    schemes = ["http", "https", "HTTP", "ftp", "http:", "https:/"]
    hosts = ["a", "a.b", "127.0.0.1", "ex-ample.com", "-a.com", "a-.com", "A.com", "a..b",
             "x" * 63 + ".com", "x" * 64 + ".com", "xn--bcher-kva.de", "a_b.com", ".a", "a.",
             "[::1]", "user@a.com", "é.com", ""]  # fmt: skip
    ports = ["", ":80", ":443", ":8080", ":0", ":080", ":65535", ":65536", ":99999", ":", ":x"]
    safe = ["/", "a", "b.html", "~", "_", "-", "A", "9", "a..b", "/a", "/b.html"]
    unsafe = [".", "..", "%41", "%7e", "é", ";", "?", "#", "//", "/.", "./", "=", "&", " ", "+",
              "@", ":", "\t"]  # fmt: skip
    taken = 0
    for _ in range(60_000):
        pieces = safe if rng.random() < 0.7 else safe + unsafe
        path = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        path = "/" + path if rng.random() < 0.8 else path
        url = f"{rng.choice(schemes)}://{rng.choice(hosts)}{rng.choice(ports)}{path}"
        if _already_canonical(url):
            taken += 1
            assert _canonical_url(url) == url, url
            assert _check_url(url) is None, url
    assert taken > 1_000
    assert _already_canonical("http://127.0.0.1:8181/p/17.html")
