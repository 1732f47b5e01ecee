"""Token usage and response facts of OpenAI and Anthropic responses and streams.

:func:`response_facts` turns a response into column values (``provider``,
``response_model``, ``response_id``, token counts, ``finish_reason``,
``token_source``); :func:`request_facts` does the same for the request's
keyword arguments. The stream accumulators (:class:`ChatStreamUsage`,
:class:`ResponsesStreamUsage`, :class:`MessagesStreamUsage`) are fed every
chunk or event of a stream and give the same facts, and the completion text,
at its end.

This module only gathers the names the integrations, the decorator and the
tests import; the code lives in:

- ``_responses``: facts and text of complete responses, dispatched per class;
- ``_request``: request facts and the chars/4 estimates of missing counts;
- ``_streams``: the stream accumulators;
- ``_read``: the defensive reads they share.

A tunable (``CHARS_PER_TOKEN``, ``MAX_CACHED_CLASSES``) is read from the module
defining it: monkeypatch it there.
"""

from __future__ import annotations

from llamonitor.llm._read import Facts
from llamonitor.llm._request import (
    CHARS_PER_TOKEN,
    TOKEN_SOURCE_ESTIMATE,
    add_estimates,
    estimate_tokens,
    prompt_chars,
    request_facts,
)
from llamonitor.llm._responses import (
    MAX_CACHED_CLASSES,
    TOKEN_SOURCE_PROVIDER,
    facts_and_text,
    response_facts,
    response_text,
)

# The dispatch cache and two of its handlers, which the tests inspect.
from llamonitor.llm._responses import _chat as _chat
from llamonitor.llm._responses import _handlers as _handlers
from llamonitor.llm._responses import _nothing as _nothing
from llamonitor.llm._streams import (
    ChatStreamUsage,
    MessagesStreamUsage,
    ResponsesStreamUsage,
    StreamUsage,
)

__all__ = [
    "CHARS_PER_TOKEN",
    "MAX_CACHED_CLASSES",
    "TOKEN_SOURCE_ESTIMATE",
    "TOKEN_SOURCE_PROVIDER",
    "ChatStreamUsage",
    "Facts",
    "MessagesStreamUsage",
    "ResponsesStreamUsage",
    "StreamUsage",
    "add_estimates",
    "estimate_tokens",
    "facts_and_text",
    "prompt_chars",
    "request_facts",
    "response_facts",
    "response_text",
]
