"""Anthropic: Messages calls as spans.

Patched: ``messages.create`` / ``parse`` and the ``messages.stream(...)``
helper (its request starts when the returned manager is entered), sync and
async.
"""

from __future__ import annotations

from typing import Any

from llamonitor.integrations._core import Api
from llamonitor.integrations._patching import Target, instrument, uninstrument
from llamonitor.llm._usage import MessagesStreamUsage

MESSAGES = Api("anthropic.messages", MessagesStreamUsage)


def _targets() -> list[Target]:
    try:
        from anthropic.resources.messages import AsyncMessages, Messages
    except ImportError as exc:
        raise ImportError(
            "instrument_anthropic() needs the anthropic package: pip install anthropic"
        ) from exc
    return [
        (Messages, "create", MESSAGES, "sync"),
        (Messages, "parse", MESSAGES, "sync"),
        (Messages, "stream", MESSAGES, "manager"),
        (AsyncMessages, "create", MESSAGES, "async"),
        (AsyncMessages, "parse", MESSAGES, "async"),
        (AsyncMessages, "stream", MESSAGES, "async_manager"),
    ]


def _resources(client: Any) -> list[Any]:
    from anthropic.resources.messages import AsyncMessages, Messages

    messages = getattr(client, "messages", None)
    if not isinstance(messages, (Messages, AsyncMessages)):
        raise TypeError(
            "expected an Anthropic client (anthropic.Anthropic, AsyncAnthropic...), "
            f"got {type(client).__name__}"
        )
    return [messages]


def instrument_anthropic(client: Any = None) -> None:
    """Record every Anthropic Messages call (``create``, ``parse``, ``stream``) as a span.

    Args:
        client: an ``Anthropic`` or ``AsyncAnthropic`` client to instrument
            alone (not the copies ``client.with_options(...)`` makes); by
            default every client, present and future.

    Calling it again changes nothing. Calls made while monitoring is not
    initialized (or inside llamonitor's own work) are not recorded.

    Raises:
        ImportError: the anthropic package is not installed.
        TypeError: ``client`` is not an Anthropic client.
    """
    instrument(_targets(), client, _resources)


def uninstrument_anthropic(client: Any = None) -> None:
    """Undo :func:`instrument_anthropic` (for ``client``, or the global patch)."""
    uninstrument(_targets(), client, _resources)
