"""Client integrations: every call of an LLM SDK becomes a span.

``instrument_openai()`` / ``instrument_anthropic()`` patch the SDK's resource
classes (every client), or one client's resources when given one; the
``uninstrument_*`` functions restore the original methods.
"""

from llamonitor.integrations._anthropic import instrument_anthropic, uninstrument_anthropic
from llamonitor.integrations._openai import instrument_openai, uninstrument_openai

__all__ = [
    "instrument_anthropic",
    "instrument_openai",
    "uninstrument_anthropic",
    "uninstrument_openai",
]
