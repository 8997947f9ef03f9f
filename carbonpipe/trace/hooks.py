"""Attribution: what a model server reports is charged to the running tracked step, once.

The step is found through a context variable; a response is charged at most once, however
many hooks see it. Pick one way per client: :func:`httpx_hooks`, :func:`requests_hook`, or an
explicit :func:`attribute`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from carbonpipe.trace.client import TRACE_HEADER, _attribute, _is_json

log = logging.getLogger("carbonpipe.trace")


def _needs_body(response: Any) -> bool:
    headers = response.headers
    return not headers.get(TRACE_HEADER) and _is_json(headers.get("content-type"))


def httpx_hooks(
    *, asynchronous: bool = False, strict: bool = False
) -> dict[str, list[Callable[[Any], Any]]]:
    """Return ``event_hooks`` for an httpx client that charge every traced response to the step.

    ``httpx.Client(event_hooks=httpx_hooks())`` or, for ``httpx.AsyncClient``,
    ``httpx_hooks(asynchronous=True)``. Outside a tracked step the hook does nothing. A JSON
    response is read in the hook to find its trace (httpx calls hooks before the body is read);
    other responses are charged from their header without reading the body. A malformed trace
    is charged as far as it is readable (``strict=False``) and logged; the request never fails
    because of it.
    """
    from carbonpipe.step import current_step

    if asynchronous:

        async def on_response_async(response: Any) -> None:
            if current_step() is None:
                return
            try:
                if _needs_body(response):
                    await response.aread()
                _attribute(response, server=None, strict=strict, read_body=True)
            except Exception as exc:
                log.warning("carbonpipe: x_carbon_trace not charged: %s", exc)

        return {"response": [on_response_async]}

    def on_response(response: Any) -> None:
        if current_step() is None:
            return
        try:
            if _needs_body(response):
                response.read()
            _attribute(response, server=None, strict=strict, read_body=True)
        except Exception as exc:
            log.warning("carbonpipe: x_carbon_trace not charged: %s", exc)

    return {"response": [on_response]}


def requests_hook(*, strict: bool = False) -> Callable[..., None]:
    """Return a ``requests`` response hook that charges every traced response to the step.

    ``session.hooks["response"].append(requests_hook())`` or
    ``requests.get(url, hooks={"response": requests_hook()})``. With ``stream=True`` only the
    ``X-Carbon-Trace`` header is read (the body is the caller's to stream); call
    :func:`attribute` after reading such a response to charge a body trace. Never raises.
    """
    from carbonpipe.step import current_step

    def on_response(response: Any, *args: Any, **kwargs: Any) -> None:
        if current_step() is None:
            return
        try:
            _attribute(
                response, server=None, strict=strict, read_body=not kwargs.get("stream", False)
            )
        except Exception as exc:
            log.warning("carbonpipe: x_carbon_trace not charged: %s", exc)

    return on_response
