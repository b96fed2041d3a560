"""Clients of several orchestrators (a leader and standbys, :mod:`kova_live.leader`): the
tenant's ``kova`` and the provider agent take ``--server``/``--orchestrator URL1,URL2,...``.

A request goes to the orchestrator that answered last. When that one refuses the connection or
answers 503 (a standby, or a network between leaders), the same request, headers and all (its
``Idempotency-Key``: the orchestrators apply a command once however often it is sent), goes to
the next, round the list, for up to ``patience`` seconds (at least once to each).

A ``307`` from a standby (``serve --redirect``) names the leader's ``--advertise-url``: the
same request, its method, body, key and bearer token, goes there. This transport follows it,
not httpx, which drops the token when a redirect leaves the origin. The orchestrators are the
ones trusted with the token; the leader's URL is theirs.
"""

from __future__ import annotations

import time

import httpx

__all__ = ["Failover", "orchestrators"]


def orchestrators(text: str) -> list[str]:
    """The URLs of a comma-separated list, without trailing slashes; raises ``ValueError`` for
    an empty list or a URL that is not http(s)."""
    urls = [u.strip().rstrip("/") for u in text.split(",") if u.strip()]
    if not urls:
        raise ValueError("name at least one orchestrator URL")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http(s) URL")
    return urls


class Failover(httpx.BaseTransport):
    """An httpx transport over several orchestrators (see the module)."""

    def __init__(self, urls: list[str], patience: float = 0.0, pause: float = 0.5) -> None:
        self.urls = [httpx.URL(u) for u in urls]
        self.patience, self.pause = patience, pause
        self.at = 0
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        give_up = time.monotonic() + self.patience
        tried = 0
        while True:
            target = self.urls[self.at % len(self.urls)]
            request.url = request.url.copy_with(
                scheme=target.scheme, host=target.host, port=target.port
            )
            last = tried + 1 >= len(self.urls) and time.monotonic() >= give_up
            try:
                response = self.inner.handle_request(request)
            except httpx.ConnectError:  # nothing was sent: the next one
                if last or len(self.urls) == 1:  # one orchestrator: it is down, say so now
                    raise
                response = None
            if response is not None and response.status_code == 307:
                try:
                    response = self._to_leader(request, response)
                except httpx.ConnectError:  # the leader it named is gone: round the list
                    response = None
                    if last:
                        raise
            if response is not None and (response.status_code != 503 or last):
                return response
            if response is not None:
                response.close()
            self.at += 1
            tried += 1
            if tried % len(self.urls) == 0:  # round the whole list: wait a little
                time.sleep(self.pause)

    def _to_leader(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        """The answer of the leader a standby's 307 names (its own 307 again, if not http(s))."""
        location = response.headers.get("Location", "")
        if not location.startswith(("http://", "https://")):
            return response
        response.read()
        response.close()
        request.url = httpx.URL(location)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()
