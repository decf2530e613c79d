"""The upstream HTTP layer: how calls from guest code reach the real API.

:class:`HttpxUpstream` sends an :class:`UpstreamRequest` with one pooled
``httpx.AsyncClient`` and returns an :class:`UpstreamResponse`:

* Non-2xx statuses are returned, never raised; the caller decides what they mean.
* Failures raise :class:`~codemode._errors.UpstreamError`: ``upstream.timeout``,
  ``upstream.unreachable`` and ``upstream.response_too_large`` (the body is streamed
  and reading stops at ``max_response_bytes``).
* Idempotent methods (GET HEAD OPTIONS PUT DELETE) are retried on 429/502/503/504 and on
  connection failures, with exponential backoff and jitter, honouring ``Retry-After``
  (seconds or HTTP date). No single wait exceeds ``max_retry_wait_seconds``; when
  ``Retry-After`` asks for more, the response is returned as it is.
* Credentials are injected host-side (:class:`~codemode._credentials.Credentials`), and
  the body and headers handed back pass through a :class:`~codemode._scrub.Scrubber` (the
  body as bytes before it is decoded, then as text or JSON). The executor scrubs again at the
  guest boundary, whatever the upstream. Static headers always win over a request's own.
* No attempt starts after the request's ``deadline`` (the run's), and none outlives it.
* Each :meth:`HttpxUpstream.send` reports exactly one :class:`AuditEvent` to every audit
  hook. Events carry no query values, headers or payloads.
"""

from __future__ import annotations

import base64
import json as jsonlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, Final, Self

import anyio
import httpx

from codemode._credentials import seed_scrubber
from codemode._errors import ConfigError, UpstreamError
from codemode._scrub import LOG_FILTER, Scrubber
from codemode._upstream_types import (
    NO_BODY,
    AuditEvent,
    AuditHook,
    Upstream,
    UpstreamRequest,
    UpstreamResponse,
    UpstreamSettings,
)

if TYPE_CHECKING:
    from codemode._access import CredentialSource
    from codemode._credentials import Credentials

__all__ = [
    "IDEMPOTENT_METHODS",
    "NO_BODY",
    "RETRY_STATUSES",
    "AuditEvent",
    "AuditHook",
    "HttpxUpstream",
    "Upstream",
    "UpstreamRequest",
    "UpstreamResponse",
    "UpstreamSettings",
]

logger = logging.getLogger("codemode.upstream")

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
_BACKOFF_BASE_SECONDS: Final = 0.5


class _RetryableConnectError(Exception):
    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error


class HttpxUpstream:
    """The :class:`Upstream` used in production, over one shared ``httpx.AsyncClient``.

    ``sleep`` and ``rng`` are seams for tests (backoff waits and jitter).
    """

    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        credentials: Credentials | None = None,
        scrubber: Scrubber | None = None,
        audit_hooks: Sequence[AuditHook] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        # The server seeds its scrubber once (seed_scrubber) and passes it here; standalone, the same rule.
        self.scrubber = scrubber if scrubber is not None else seed_scrubber(credentials, settings.headers)
        self._credentials = credentials
        self._hooks = tuple(audit_hooks)
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter for retry backoff, not security
        self._static = {name.lower() for name in settings.headers}
        if credentials is not None:
            credentials.bind(
                transport=transport,
                verify_tls=settings.verify_tls,
                on_secret=self.scrubber.add,
            )
        timeout = httpx.Timeout(
            settings.timeout_seconds,
            connect=min(settings.connect_timeout_seconds, settings.timeout_seconds),
        )
        self._client = httpx.AsyncClient(
            base_url=settings.base_url or "",
            headers={"User-Agent": settings.user_agent, **settings.headers},
            # A jar that accepts nothing: Set-Cookie from one call never leaks into the next.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            timeout=timeout,
            verify=settings.verify_tls,
            follow_redirects=False,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._credentials is not None:
            await self._credentials.aclose()

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        method = request.method.upper()
        started = time.perf_counter()
        attempts = 0
        status: int | None = None
        error: str | None = None
        audit_url = self._audit_url(request)
        caller = request.caller
        # A caller's own credentials replace the server's shared ones, never add to them.
        credentials: CredentialSource | None = (
            caller.credentials if caller is not None and caller.credentials is not None else self._credentials
        )
        own = credentials is not None and credentials is not self._credentials
        scrubber = self.scrubber.extended(credentials.secrets()) if own and credentials else self.scrubber
        run_deadline = request.deadline
        # A caller's own secrets are not in the process-wide log filter: scrub them from what is
        # logged while this request is sent (httpx logs the URL, with a query key, at INFO).
        logs = ExitStack()

        def learned(source: CredentialSource) -> Scrubber:
            """After apply(): what a caller's source sent (a refreshed token too) is known now."""
            if not own:
                return scrubber
            fresh = self.scrubber.extended(source.secrets())
            logs.enter_context(LOG_FILTER.current(fresh))
            return fresh

        try:
            original = request
            if credentials is not None:
                request = await credentials.apply(request)
                scrubber = learned(credentials)
            outgoing = self._build(request, method)
            audit_url = self._audit_url(request, outgoing.url)
            refreshed = False
            while True:
                attempts += 1
                last = attempts > self.settings.max_retries or method not in IDEMPOTENT_METHODS
                deadline = anyio.current_time() + self.settings.timeout_seconds
                limit = f"within timeout_seconds={self.settings.timeout_seconds:g}"
                if run_deadline is not None:
                    left = run_deadline - time.monotonic()
                    if left <= 0:
                        raise UpstreamError(
                            f"{self._where(outgoing, scrubber)}: not sent, the execution's deadline has passed.",
                            code="upstream.timeout",
                        )
                    if anyio.current_time() + left < deadline:
                        deadline, limit = anyio.current_time() + left, "before the execution's deadline"
                try:
                    response = await self._attempt(outgoing, deadline, scrubber, limit)
                except _RetryableConnectError as exc:
                    if last:
                        raise exc.error from exc.__cause__
                    await self._sleep(self._backoff(attempts))
                    continue
                if (
                    response.status_code == 401
                    and not refreshed
                    and credentials is not None
                    and credentials.invalidate_tokens(original)
                ):
                    # A fetched OAuth token was refused: fetch a new one and try once more.
                    refreshed = True
                    await response.aclose()
                    request = await credentials.apply(original)
                    scrubber = learned(credentials)
                    outgoing = self._build(request, method)
                    continue
                try:
                    status = response.status_code
                    wait = None if last else self._retry_wait(response, attempts)
                    if wait is not None and run_deadline is not None and time.monotonic() + wait >= run_deadline:
                        wait = None  # a retry could not finish in time: hand over this answer
                    if wait is None:
                        body = await self._read_body(response, outgoing, deadline, scrubber, limit)
                        return UpstreamResponse(
                            status=status,
                            headers=scrubber.scrub_headers(response.headers),
                            body=self._decode(response, body, scrubber),
                            elapsed_ms=(time.perf_counter() - started) * 1000,
                            attempts=attempts,
                        )
                finally:
                    await response.aclose()
                await self._sleep(wait)
        except UpstreamError as exc:
            error = exc.code
            exc.operation = exc.operation or request.operation
            raise
        except (httpx.HTTPError, ValueError) as exc:
            # e.g. LocalProtocolError for an illegal header value, UnicodeEncodeError: the text may
            # hold a credential, so only the type is kept.
            error = "upstream.invalid_request"
            raise UpstreamError(
                f"{method} {request.operation}: the request could not be sent ({type(exc).__name__}).",
                code="upstream.invalid_request",
                operation=request.operation,
            ) from None
        except BaseException as exc:  # re-raised: only recorded for the audit event
            error = getattr(exc, "code", None) or type(exc).__name__
            raise
        finally:
            logs.close()
            self._audit(
                AuditEvent(
                    operation=request.operation,
                    method=method,
                    url=audit_url,
                    status=status,
                    elapsed_ms=(time.perf_counter() - started) * 1000,
                    attempts=attempts,
                    error=error,
                    subject=caller.subject if caller is not None else None,
                    client_id=caller.client_id if caller is not None else None,
                )
            )

    # -- one attempt -------------------------------------------------------------------

    def _build(self, request: UpstreamRequest, method: str) -> httpx.Request:
        url = httpx.URL(request.url)
        if not url.is_absolute_url and self.settings.base_url is None:
            raise ConfigError(
                f"Operation {request.operation!r} has a relative URL but no upstream base URL"
                " is configured; set base_url (or give the spec a server URL).",
                code="config.no_base_url",
            )
        kwargs: dict[str, Any] = {}
        # The operator's static headers win: a request header of the same name never replaces one.
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self._static}
        if request.json is None:  # httpx reads json=None as "no body"
            kwargs["content"] = b"null"
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        elif request.json is not NO_BODY:
            kwargs["json"] = request.json
        if request.data is not None:
            kwargs["data"] = request.data
        if request.files is not None:
            kwargs["files"] = request.files
        if request.content is not None:
            kwargs["content"] = request.content
        # httpx replaces a URL's own query when params are given: keep both.
        params: list[tuple[str, str | int | float | bool | None]] | None = None
        if request.params:
            params = [*url.params.multi_items(), *request.params]
        return self._client.build_request(
            method,
            request.url,
            params=params,
            headers=headers,
            cookies=request.cookies or None,
            **kwargs,
        )

    def _where(self, outgoing: httpx.Request, scrubber: Scrubber) -> str:
        where = f"{outgoing.method} {_host_port(outgoing.url)}{outgoing.url.path}"
        return scrubber.scrub_text(where)

    async def _attempt(
        self, outgoing: httpx.Request, deadline: float, scrubber: Scrubber, limit: str
    ) -> httpx.Response:
        """One request; ``limit`` says which deadline ``deadline`` is (the upstream's own, or the run's)."""
        where = self._where(outgoing, scrubber)
        s = self.settings
        try:
            with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                return await self._client.send(outgoing, stream=True)
        except httpx.ConnectTimeout as exc:
            raise _RetryableConnectError(
                UpstreamError(
                    f"{where}: could not connect to {_host_port(outgoing.url)} within"
                    f" connect_timeout_seconds={s.connect_timeout_seconds:g}.",
                    code="upstream.timeout",
                )
            ) from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            reasons: dict[type[BaseException], str] = {
                httpx.ReadTimeout: "no response data",
                httpx.WriteTimeout: "could not send the request",
                httpx.PoolTimeout: "no free connection",
            }
            which = reasons.get(type(exc), "no response")
            raise UpstreamError(
                f"{where}: {which} {limit}.",
                code="upstream.timeout",
            ) from exc
        except (
            httpx.ConnectError,
            httpx.RemoteProtocolError,
            httpx.NetworkError,
        ) as exc:
            error = UpstreamError(
                f"{where}: cannot reach {_host_port(outgoing.url)}"
                f" ({type(exc).__name__}: {scrubber.scrub_text(_short_reason(exc))}).",
                code="upstream.unreachable",
            )
            if isinstance(exc, httpx.ConnectError):
                raise _RetryableConnectError(error) from exc
            raise error from exc

    async def _read_body(
        self, response: httpx.Response, outgoing: httpx.Request, deadline: float, scrubber: Scrubber, limit: str
    ) -> bytes:
        cap = self.settings.max_response_bytes
        where = self._where(outgoing, scrubber)

        def too_large(detail: str) -> UpstreamError:
            return UpstreamError(
                f"{where}: the response is larger than max_response_bytes={cap} ({detail});"
                " ask for less (pagination, filters, fields) or raise the limit.",
                code="upstream.response_too_large",
                status=response.status_code,
            )

        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise too_large(f"Content-Length is {int(declared)}")
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise too_large(f"stopped reading after {size} bytes")
                    chunks.append(chunk)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise UpstreamError(
                f"{where}: the response body did not arrive {limit}.",
                code="upstream.timeout",
            ) from exc
        except httpx.HTTPError as exc:  # broken stream, bad encoding
            raise UpstreamError(
                f"{where}: the response could not be read ({type(exc).__name__}).",
                code="upstream.unreachable",
            ) from exc
        return b"".join(chunks)

    def _decode(self, response: httpx.Response, body: bytes, scrubber: Scrubber) -> Any:
        """JSON, text or ``{"base64", "content_type"}``; scrubbed as bytes first, then once decoded."""
        if not body:
            return None
        content_type = response.headers.get("content-type", "")
        media = content_type.split(";", 1)[0].strip().lower()
        charset = response.charset_encoding
        body = scrubber.scrub_bytes(body, charset)
        if media.endswith(("/json", "+json")):
            try:
                return scrubber.scrub_obj(jsonlib.loads(body))
            except ValueError as exc:
                text = body.decode(charset or "utf-8", errors="replace")
                if not response.is_success:  # already an error: its text is the best account of it
                    return scrubber.scrub_text(text)
                raise UpstreamError(
                    f"HTTP {response.status_code}, but the response is not valid JSON although its Content-Type is"
                    f" {media} ({_json_problem(exc)}); its text is in ApiError.body.",
                    code="upstream.invalid_json",
                    status=response.status_code,
                    body=scrubber.scrub_text(text),
                ) from None
        if _is_text(media):
            try:
                text = body.decode(charset or "utf-8", errors="replace")
            except LookupError:
                text = body.decode("utf-8", errors="replace")
            return scrubber.scrub_text(text)
        if not media:
            try:
                return scrubber.scrub_text(body.decode("utf-8"))
            except UnicodeDecodeError:
                pass
        return {
            "base64": base64.b64encode(body).decode("ascii"),
            "content_type": media or "application/octet-stream",
        }

    # -- retries -----------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter, capped at max_retry_wait_seconds."""
        ceiling: float = min(
            self.settings.max_retry_wait_seconds,
            _BACKOFF_BASE_SECONDS * 2.0 ** (attempt - 1),
        )
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying ``response``, or None to return it."""
        if response.status_code not in RETRY_STATUSES:
            return None
        retry_after = _parse_retry_after(response.headers.get("retry-after"))
        if retry_after is None:
            return self._backoff(attempt)
        if retry_after > self.settings.max_retry_wait_seconds:
            return None
        return retry_after

    # -- audit -------------------------------------------------------------------------

    def _audit_url(self, request: UpstreamRequest, url: httpx.URL | None = None) -> str:
        if url is None:
            try:
                url = httpx.URL(request.url)
            except httpx.InvalidURL:
                return "<invalid URL>"
        names = [k for k, _ in url.params.multi_items()] + [k for k, _ in request.params]
        base = url.copy_with(query=None, fragment=None, username=None, password=None)
        text = str(base)
        if names:
            text += "?" + "&".join(dict.fromkeys(names))
        return self.scrubber.scrub_text(text)

    def _audit(self, event: AuditEvent) -> None:
        for hook in self._hooks:
            try:
                hook(event)
            except Exception:  # a broken audit hook must never break a call
                logger.warning("audit hook %r raised; ignored", hook, exc_info=True)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_text(media: str) -> bool:
    return (
        media.startswith("text/")
        or media.endswith(("+xml", "/xml", "/javascript"))
        or media
        in (
            "application/x-www-form-urlencoded",
            "application/graphql",
            "application/yaml",
            "application/x-yaml",
        )
    )


def _json_problem(exc: ValueError) -> str:
    if isinstance(exc, jsonlib.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return type(exc).__name__


def _host_port(url: httpx.URL) -> str:
    port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
    return f"{url.host}:{port}"


def _short_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
