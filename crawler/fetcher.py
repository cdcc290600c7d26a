"""Request -> Response or FetchError. Owns the crawl's one aiohttp ClientSession.

One request, one answer: a redirect comes back as a Response like any other (the parse
stage makes its next hop a request of its own). Retries go through aiohttp-retry. Its
request function is ours (`_Attempt`): it sends the request and reads the body, capped
at MAX_BODY, so a connection reset or a timeout mid-body is retried like one before the
headers. Library errors become FetchError at one boundary, in `fetch()`.

Each try is sent with the Cookie header of the request's session, and each answer's
Set-Cookie goes into it (crawler/cookies.py; `COOKIES`). `DEFAULT_HEADERS` are the
session's headers, under each request's own; `HTTP_AUTH` credentials go to their host
only, decided by each request's own URL (a redirect's next hop is a request of its own).
`_Attempt` also picks each try's proxy (`meta["proxy"]`, else the next of PROXY: see
crawler/proxies.py), so a retry after a proxy's failure goes through another one; a
failure at the proxy is a ProxyError. With AUTOTHROTTLE, `on_answer` hears each try's
latency and status (the frontier's `answered`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
import zlib
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp_retry import RetryClient, RetryOptionsBase

from crawler.cookies import Jars
from crawler.errors import BodyTooLarge, FetchError
from crawler.http import Request, Response
from crawler.proxies import Proxies, Proxy, ProxyError, parse_proxy
from crawler.settings import Settings
from crawler.tools.cache import Cache
from crawler.urls import fingerprint

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RETRY_EXCEPTIONS = {aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError}
BACKOFF_START = 0.25  # seconds before the first retry; doubles each time, with jitter
BACKOFF_MAX = 30.0
RETRY_AFTER_MAX = 600.0  # a longer Retry-After is not waited for: the page fails
PROXY_CONNECT = 10.0  # seconds to connect to a proxy, at most (and half of TIMEOUT at most)


class _Inflate(Protocol):
    """zlib's decompress object, or _Deflate."""

    @property
    def unconsumed_tail(self) -> bytes: ...
    @property
    def eof(self) -> bool: ...
    def decompress(self, data: bytes, max_length: int, /) -> bytes: ...


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff(attempt: int) -> float:
    """Seconds to wait after try `attempt` (1, 2, ...): exponential, with jitter."""
    wait: float = min(BACKOFF_MAX, BACKOFF_START * 2 ** (attempt - 1))
    return wait * random.uniform(0.5, 1.5)


class PoliteRetry(RetryOptionsBase):
    """Exponential backoff with jitter; never sooner than Retry-After says."""

    def __init__(self, attempts: int, on_wait: Callable[[str, float], None]) -> None:
        super().__init__(
            attempts=attempts,
            statuses=set(),  # decided by _should_stop, which reads Retry-After too
            exceptions=RETRY_EXCEPTIONS,
            retry_all_server_errors=False,
            evaluate_response_callback=self._should_stop,
        )
        self._on_wait = on_wait

    @staticmethod
    async def _should_stop(response: aiohttp.ClientResponse) -> bool:
        if response.status not in RETRY_STATUSES:
            return True
        wait = retry_after(response.headers.get("Retry-After"))
        return wait is not None and wait > RETRY_AFTER_MAX

    def get_timeout(self, attempt: int, response: aiohttp.ClientResponse | None = None) -> float:
        """Seconds before try `attempt + 1`."""
        wait = backoff(attempt)
        if response is not None:
            wait = max(wait, retry_after(response.headers.get("Retry-After")) or 0.0)
            self._on_wait(str(response.url), wait)
        return wait


class _Attempt:
    """The request function aiohttp-retry calls once per try: send (redirects are not
    followed; through a proxy chosen for this try, if any), then read the body."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        max_body: int,
        jars: Jars | None = None,
        proxies: Proxies | None = None,
        proxy_timeout: aiohttp.ClientTimeout | None = None,
        on_answer: Callable[[str, float, int], None] | None = None,
    ) -> None:
        self._session = session
        self._max_body = max_body
        self._jars = jars
        self._proxies = proxies
        self._proxy_timeout = proxy_timeout
        self._meta_proxies: dict[str, Proxy] = {}
        self._on_answer = on_answer  # AUTOTHROTTLE's: each try's latency and status

    async def request(
        self, method: str, url: str, *, trace_request_ctx: dict[str, Any], **kwargs: Any
    ) -> aiohttp.ClientResponse:
        state: _State = trace_request_ctx["state"]
        state.attempts = trace_request_ctx["current_attempt"]
        jars = self._jars
        if jars is not None:  # per try: a retried answer may have set a cookie
            cookie = jars.header(state.request, state.attempts == 1)
            headers = kwargs.get("headers")
            if cookie is not None and not _has(headers, "cookie"):  # the request's own wins
                kwargs["headers"] = {**(headers or {}), "Cookie": cookie}
        on_answer = self._on_answer
        started = time.monotonic() if on_answer is not None else 0.0
        meta, proxy = state.request.meta, None
        if self._proxies is not None or (meta is not None and "proxy" in meta):
            proxy = self._proxy_for(state.request)
        if proxy is None:
            response = await self._session.request(method, url, allow_redirects=False, **kwargs)
        else:
            response = await self._through(proxy, method, url, kwargs)
        if jars is not None and "Set-Cookie" in response.headers:  # 3xx and errors too
            jars.receive(state.request, str(response.url), response.headers.getall("Set-Cookie"))
        try:
            state.body = await self._read(response, state.request)
        except BaseException:
            response.close()  # the rest of the body is unread: drop the connection
            raise
        if on_answer is not None:
            on_answer(state.request.url, time.monotonic() - started, response.status)
        return response

    def _proxy_for(self, request: Request) -> Proxy | None:
        """meta["proxy"] if the request has that key (None: direct), else the next of PROXY."""
        meta = request.meta
        if meta is not None and "proxy" in meta:
            if meta["proxy"] is None:
                return None
            text = str(meta["proxy"])
            proxy = self._meta_proxies.get(text)
            if proxy is None:
                try:
                    proxy = parse_proxy(text)
                except ValueError as exc:
                    raise FetchError(request, f"meta proxy: {exc}") from None
                self._meta_proxies[text] = proxy
            return proxy
        return self._proxies.choose() if self._proxies is not None else None

    async def _through(
        self, proxy: Proxy, method: str, url: str, kwargs: dict[str, Any]
    ) -> aiohttp.ClientResponse:
        """One try through `proxy`; ProxyError if it failed at the proxy, not the target."""
        try:
            response = await self._session.request(
                method, url, allow_redirects=False, proxy=proxy.url,
                timeout=self._proxy_timeout, **kwargs,
            )  # fmt: skip
        except (aiohttp.ClientHttpProxyError, aiohttp.ConnectionTimeoutError) as exc:
            raise self._failed(proxy, type(exc).__name__) from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc, aiohttp.ClientSSLError):
                raise  # the target's certificate or TLS, through the tunnel
            raise self._failed(proxy, type(exc).__name__) from exc
        if response.status == 407:
            response.close()
            raise self._failed(proxy, "407 Proxy Authentication Required")
        Proxies.worked(proxy)
        log.debug("%s %s via proxy %s: %d", method, url, proxy.shown, response.status)
        return response

    @staticmethod
    def _failed(proxy: Proxy, reason: str) -> ProxyError:
        Proxies.failed(proxy, reason)
        return ProxyError(f"proxy {proxy.shown}: {reason}")

    async def _read(self, response: aiohttp.ClientResponse, request: Request) -> bytes:
        limit = self._max_body
        declared = response.content_length
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding == "identity":
            if declared is not None and declared > limit:
                raise BodyTooLarge(request, "BodyTooLarge")
            if declared is not None:
                return await response.read()  # aiohttp stops at the declared length
        # Unknown length or compressed: stream, inflating here (not in aiohttp) so a
        # huge or zip-bomb body never sits in memory past the cap, and a cut-off
        # stream is an error, not a short page.
        decoder = _decoder(encoding, request)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(1 << 16):
            if decoder is not None:
                chunk = decoder.decompress(chunk, limit + 1 - size)
                if decoder.unconsumed_tail:
                    raise BodyTooLarge(request, "BodyTooLarge")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(request, "BodyTooLarge")
            chunks.append(chunk)
        if decoder is not None and not decoder.eof:
            raise aiohttp.ClientPayloadError(f"{encoding} body cut off")
        return b"".join(chunks)


def _decoder(encoding: str, request: Request) -> _Inflate | None:
    if encoding == "identity":
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Deflate()
    raise FetchError(request, f"unsupported Content-Encoding {encoding!r}")


class _Deflate:
    """'deflate' is zlib-wrapped by the standard and raw by some servers: either works."""

    def __init__(self) -> None:
        self._inner: _Inflate | None = None

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._inner is None:
            raw = bool(data) and (data[0] & 0x0F) != 8  # no zlib header: raw deflate
            self._inner = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        return self._inner.decompress(data, max_length)

    @property
    def unconsumed_tail(self) -> bytes:
        return self._inner.unconsumed_tail if self._inner is not None else b""

    @property
    def eof(self) -> bool:
        return self._inner.eof if self._inner is not None else False


class _State:
    __slots__ = ("attempts", "body", "request")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.attempts = 0
        self.body = b""


class Fetcher:
    """Fetches requests through one shared session, with retries, timeouts and a body cap."""

    def __init__(
        self,
        settings: Settings,
        on_wait: Callable[[str, float], None],
        cache: Cache | None = None,
        jars: Jars | None = None,
        on_answer: Callable[[str, float, int], None] | None = None,
    ) -> None:
        self._settings = settings
        self._on_answer = on_answer
        self._cache = cache
        # The crawl's jars (saved with its pages), else this fetcher's own; none: COOKIES off.
        self.jars = (jars or Jars()) if settings.cookies else None
        self._auth = {host: _basic(*pair) for host, pair in settings.http_auth.items()}
        self.bytes = 0  # body bytes received from the network
        self.retries = 0
        self._on_wait = on_wait
        self._session: aiohttp.ClientSession | None = None
        self._client: RetryClient | None = None

    async def __aenter__(self) -> Fetcher:
        s = self._settings
        connector = aiohttp.TCPConnector(limit=s.concurrency, limit_per_host=s.per_host)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=s.timeout, sock_connect=s.timeout),
            headers={
                "Accept-Encoding": "gzip, deflate",
                **s.default_headers,  # under each request's own headers, as aiohttp merges them
                "User-Agent": s.user_agent,
            },
            auto_decompress=False,  # _Attempt._read inflates, under the MAX_BODY cap
            cookie_jar=aiohttp.DummyCookieJar(),  # the jars are ours: one per session
        )
        proxies = Proxies(s.proxy) if s.proxy else None
        proxy_timeout = aiohttp.ClientTimeout(
            total=s.timeout, sock_connect=min(PROXY_CONNECT, s.timeout / 2)
        )
        attempt = _Attempt(
            self._session, s.max_body, self.jars, proxies, proxy_timeout, self._on_answer
        )
        self._client = RetryClient(
            client_session=attempt,  # type: ignore[arg-type]
            retry_options=PoliteRetry(s.retries + 1, self._on_wait),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, request: Request) -> tuple[Response, int]:
        """The response to `request` and the number of tries it took (0: from the cache);
        or FetchError."""
        cached = fp = None
        if self._cache is not None:  # keyed by fingerprint; a leased dont_filter request's
            # fp is the uid the Redis frontier gave it, not its fingerprint
            fp = request.fp if request.fp and not request.dont_filter else None
            fp = fp or fingerprint(request.method, request.url, request.body)
            cached = await self._cache.get(request, fp)
        if cached is not None:
            response, attempts = cached, 0
            if self.jars is not None and "Set-Cookie" in cached.headers:
                self.jars.receive(request, cached.url, _set_cookies(cached.headers))
        else:
            response, attempts = await self._fetch(request)
            if self._cache is not None and fp is not None and _cacheable(response):
                await self._cache.put(fp, response)
        if response.status >= 400:
            raise FetchError(request, str(response.status), attempts=attempts, response=response)
        return response, attempts

    async def _fetch(self, request: Request) -> tuple[Response, int]:
        assert self._client is not None, "Fetcher used outside `async with`"
        state = _State(request)
        sent = dict(request.headers) if request.headers else None
        if self._auth:
            sent = self._authorize(request.url, sent)
        try:
            async with self._client.request(
                request.method,
                request.url,
                headers=sent,
                data=request.body,
                trace_request_ctx={"state": state},
            ) as response:
                status = response.status
                url = str(response.url)
                headers = response.headers
        except FetchError as exc:  # ours, raised inside the try: no retry
            exc.attempts = state.attempts
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = _reason(exc)
            raise FetchError(request, reason, attempts=state.attempts) from exc
        finally:
            self.retries += max(0, state.attempts - 1)
        self.bytes += len(state.body)
        fetched = Response(
            url=url, status=status, headers=headers, body=state.body, request=request
        )
        return fetched, state.attempts

    def _authorize(self, url: str, headers: dict[str, str] | None) -> dict[str, str] | None:
        """`headers` with the Basic credentials HTTP_AUTH has for the URL's host (its
        `host:port` entry, else its `host` entry), unless they carry an Authorization."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
        found = self._auth.get(f"{host}:{port}") if port is not None else None
        found = found or self._auth.get(host)
        if found is None or _has(headers, "authorization"):
            return headers
        return {**(headers or {}), "Authorization": found}


def _basic(user: str, password: str) -> str:
    """The Authorization header of Basic credentials (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _has(headers: Mapping[str, str] | None, name: str) -> bool:
    """Whether `headers` has `name` (lower case), in any case."""
    return bool(headers) and any(k.lower() == name for k in headers or ())


def _set_cookies(headers: Mapping[str, str]) -> list[str]:
    """Every Set-Cookie value of a response's headers (a multidict, or a plain mapping)."""
    getall = getattr(headers, "getall", None)
    return list(getall("Set-Cookie", ())) if getall is not None else [headers["Set-Cookie"]]


def _cacheable(response: Response) -> bool:
    """Successful pages and redirects (with their Location); and robots.txt answers
    short of a server error. Not a 304: it answers one conditional request, not the URL."""
    if response.status < 400:
        return response.status != 304
    return response.status < 500 and response.request.url.endswith("/robots.txt")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "TimeoutError"
    return type(exc).__name__
