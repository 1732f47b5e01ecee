"""OpenAI: Chat Completions and Responses calls as spans.

Patched: ``chat.completions.create`` / ``parse`` and ``responses.create`` /
``parse``, sync and async. The ``stream()`` helpers of both go through
``create``, so they are recorded too (one span per call).
"""

from __future__ import annotations

from typing import Any

from llamonitor.integrations._core import Api
from llamonitor.integrations._patching import Target, instrument, uninstrument
from llamonitor.llm._usage import ChatStreamUsage, ResponsesStreamUsage

CHAT = Api("openai.chat.completions", ChatStreamUsage)
RESPONSES = Api("openai.responses", ResponsesStreamUsage)


def _targets() -> list[Target]:
    try:
        from openai.resources.chat.completions import AsyncCompletions, Completions
        from openai.resources.responses import AsyncResponses, Responses
    except ImportError as exc:
        raise ImportError(
            "instrument_openai() needs the openai package: pip install openai"
        ) from exc
    return [
        (Completions, "create", CHAT, "sync"),
        (Completions, "parse", CHAT, "sync"),
        (AsyncCompletions, "create", CHAT, "async"),
        (AsyncCompletions, "parse", CHAT, "async"),
        (Responses, "create", RESPONSES, "sync"),
        (Responses, "parse", RESPONSES, "sync"),
        (AsyncResponses, "create", RESPONSES, "async"),
        (AsyncResponses, "parse", RESPONSES, "async"),
    ]


def _resources(client: Any) -> list[Any]:
    from openai.resources.chat.completions import AsyncCompletions, Completions
    from openai.resources.responses import AsyncResponses, Responses

    chat = getattr(client, "chat", None)
    found = [
        r
        for r in (getattr(chat, "completions", None), getattr(client, "responses", None))
        if isinstance(r, (Completions, AsyncCompletions, Responses, AsyncResponses))
    ]
    if not found:
        raise TypeError(
            f"expected an OpenAI client (openai.OpenAI, AsyncOpenAI, AzureOpenAI...), "
            f"got {type(client).__name__}"
        )
    return found


def instrument_openai(client: Any = None) -> None:
    """Record every OpenAI Chat Completions and Responses call as a span.

    Args:
        client: an ``OpenAI`` or ``AsyncOpenAI`` client to instrument alone
            (not the copies ``client.with_options(...)`` makes); by default
            every client, present and future.

    Calling it again changes nothing. Calls made while monitoring is not
    initialized (or inside llamonitor's own work) are not recorded.

    Raises:
        ImportError: the openai package is not installed.
        TypeError: ``client`` is not an OpenAI client.
    """
    instrument(_targets(), client, _resources)


def uninstrument_openai(client: Any = None) -> None:
    """Undo :func:`instrument_openai` (for ``client``, or the global patch)."""
    uninstrument(_targets(), client, _resources)
