"""An LLM as judge: any OpenAI- or Anthropic-compatible client grades a span's
answer, and the grade becomes a score (``source="llm"``).

The client is yours (``openai.OpenAI(base_url=...)``, ``anthropic.Anthropic()``,
a local server speaking either API): a client with ``chat.completions.create``
is called the OpenAI way, one with ``messages.create`` the Anthropic way. The
judge is asked for JSON ``{"score": 1..5, "reason": "..."}``; the score is kept
as ``(score - 1) / 4`` (0 worst, 1 best), the reason as the comment. An answer
that is not such JSON is an error for that span (counted by the run), never
a made-up score.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llamonitor.quality._evaluators import Evaluator, Outcome

DEFAULT_CRITERIA = "Is the answer correct, relevant to the question, and helpful?"
MAX_TEXT_CHARS = 8000
"""Characters of the question and of the answer shown to the judge at most."""

PROMPT = """You are grading an AI assistant's answer.
Criteria: {criteria}

Question:
<<<
{question}
>>>

Answer:
<<<
{answer}
>>>

Reply with JSON only: {{"score": <integer 1 to 5, 5 best>, "reason": "<one sentence>"}}"""

_JSON = re.compile(r"\{.*\}", re.DOTALL)


def parse_grade(text: str) -> Outcome:
    """The :class:`Outcome` of a judge's reply.

    Raises:
        ValueError: no JSON object with a score from 1 to 5 in it.
    """
    found = _JSON.search(text or "")
    if found is None:
        raise ValueError(f"the judge did not answer JSON: {text[:120]!r}")
    try:
        data = json.loads(found.group(0))
        grade = float(data["score"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"the judge's JSON has no numeric score: {text[:120]!r}") from None
    if not 1 <= grade <= 5:
        raise ValueError(f"the judge's score {grade:g} is not between 1 and 5")
    reason = data.get("reason")
    return Outcome((grade - 1) / 4, comment=None if reason is None else str(reason)[:2000])


class LLMJudge:
    """Grades spans' answers with ``client``'s ``model``.

    Args:
        client: an OpenAI-compatible (``chat.completions.create``) or
            Anthropic-compatible (``messages.create``) client.
        model: the judge model's name.
        criteria: what a good answer is.
        max_tokens: the judge's reply at most.
    """

    def __init__(
        self,
        client: Any,
        model: str,
        criteria: str = DEFAULT_CRITERIA,
        max_tokens: int = 300,
    ) -> None:
        chat = getattr(getattr(client, "chat", None), "completions", None)
        if callable(getattr(chat, "create", None)):
            self.api = "openai"
        elif callable(getattr(getattr(client, "messages", None), "create", None)):
            self.api = "anthropic"
        else:
            raise ValueError(
                "judge: the client has neither chat.completions.create (OpenAI) nor "
                "messages.create (Anthropic)"
            )
        self.client = client
        self.model = model
        self.criteria = criteria
        self.max_tokens = max_tokens

    def prompt(self, span: dict[str, Any]) -> str:
        return PROMPT.format(
            criteria=self.criteria,
            question=str(span.get("prompt_content") or "")[:MAX_TEXT_CHARS],
            answer=str(span.get("completion_content") or "")[:MAX_TEXT_CHARS],
        )

    def ask(self, prompt: str) -> str:
        """The judge's reply text to ``prompt``."""
        messages = [{"role": "user", "content": prompt}]
        if self.api == "openai":
            reply = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=self.max_tokens, temperature=0
            )
            return str(reply.choices[0].message.content or "")
        reply = self.client.messages.create(
            model=self.model, messages=messages, max_tokens=self.max_tokens
        )
        return "".join(
            str(getattr(block, "text", "")) for block in reply.content
            if getattr(block, "type", "text") == "text"
        )

    def __call__(self, span: dict[str, Any]) -> Outcome | None:
        if not isinstance(span.get("completion_content"), str):
            return None
        return parse_grade(self.ask(self.prompt(span)))

    def evaluator(self, name: str = "judge") -> Evaluator:
        """This judge as an :class:`Evaluator` (its spec names the model)."""
        return Evaluator(name, self, f"judge:{self.model}", source="llm", needs_text=True)
