"""The real API behind the gateway: its URL and key from the host's environment, the host's
proxy, and which failed answers are the provider's fault rather than the sandbox's."""

from __future__ import annotations

import base64
import http.client
import os
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from .. import ModelError

if TYPE_CHECKING:
    from results.registry import ModelSpec


def proxy_for(url: str) -> tuple[str, int, dict[str, str]] | None:
    """(host, port, auth header) of the host's proxy for `url`: HTTPS_PROXY / HTTP_PROXY (or
    ALL_PROXY) unless NO_PROXY exempts the host, as the built-in agent's SDKs read them; None:
    straight. Raises ModelError for a proxy setting the gateway cannot use (the host's fault)."""
    u = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(u.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(u.hostname or ""):
        return None
    try:
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        port = p.port or 80
    except ValueError as e:
        raise ModelError(f"the host's proxy setting {proxy!r} for {u.scheme} is invalid: {e}") from None
    if p.scheme != "http" or not p.hostname:
        raise ModelError(f"the host's proxy setting {proxy!r} for {u.scheme}: the gateway takes http://HOST:PORT "
                         "proxies only")
    auth = {}
    if p.username is not None:
        cred = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
        auth = {"proxy-authorization": "Basic " + base64.b64encode(cred).decode()}
    return p.hostname, port, auth


def connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """(connection, request target, extra headers) for a POST to `url`, through the host's
    proxy (`proxy_for`) or straight. HTTPS goes through a CONNECT tunnel; plain HTTP is sent to
    the proxy with the absolute URL. Raises ModelError for an unusable proxy setting."""
    u = urlsplit(url)
    where = u.path + (f"?{u.query}" if u.query else "")
    proxy = proxy_for(url)
    if proxy is None:
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        return cls(u.hostname, u.port, timeout=timeout), where, {}
    host, port, auth = proxy
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout)
        conn.set_tunnel(u.hostname, u.port or 443, headers=auth)
        return conn, where, {}
    return http.client.HTTPConnection(host, port, timeout=timeout), url, auth


def upstream(spec: ModelSpec) -> tuple[str, str, dict[str, str]]:
    """(provider family, base URL, auth headers) of the real API, from the host's environment.
    Raises ModelError when the key is missing."""
    record = spec.record  # results/providers.py
    if missing := record.missing_key():
        raise ModelError(f"no API key on the host: set {missing}")
    return record.wire, spec.base_url or record.base_url(), record.auth()


def target(family: str, base: str, path: str) -> str:
    """The upstream URL of a request for `path` (already checked against ROUTES)."""
    base = base.rstrip("/")
    if family == "completions":  # OpenAI-style base URLs end in /v1, the request paths start with it
        return base + path[len("/v1"):] if base.endswith("/v1") else base + path
    return base + path


def provider_fault(status: int, served_before: bool) -> bool:
    """Whether a failed model call is one the agent in the sandbox could not have caused: the
    provider down, unanswering (502) or over its limits (5xx, 408, 429), the host's key refused
    (401, 403) before any call went through, or the host's proxy refusing it (407). Any other
    answer (400, 404, 413, 422) is to what the sandbox sent, and so is a 401/403 once the key
    has worked (headers such as OpenAI-Organization pass through): those are the agent's,
    never a voided trial."""
    return status >= 500 or status in (407, 408, 429) or (status in (401, 403) and not served_before)
