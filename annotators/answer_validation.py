"""Checks every VLM answer before it becomes training data; a rejected answer carries a named `DropReason`.

Checks, in order: the backend refused the request; the answer is empty; it was cut at the token budget; it is
too short or too long; it is not in the expected language (script and function words, for English); it echoes the
prompt's fixed wording (a run of `echo_ngram` words, or the whole answer when it is short); and, where JSON was
asked, it is one JSON object with the required fields (a Markdown code fence around it is tolerated: instruction
models add one even when told not to).
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from typing import Any

from vlaforge.annotators.vlm_client import FinishReason, VlmAnswer
from vlaforge.datasets.drops import DropReason

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_ENGLISH_FUNCTION_WORDS = frozenset(
    "a an the is are was were be of on in to and or with it its this that these those at for from by has have "
    "there no not yes into onto near next left right above below under behind".split())
_LANGUAGES = ("en",)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome for one answer: `value` (text, or the parsed JSON object) when `reason` is None."""

    reason: DropReason | None
    message: str = ""
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.reason is None


class AnswerValidation:
    """Validates answers (text or JSON) against one configuration."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        min_words: int = 1
        """Fewer words is ANSWER_TOO_SHORT."""
        max_words: int = 300
        """More words is ANSWER_TOO_LONG."""
        max_chars: int = 4000
        """More characters is ANSWER_TOO_LONG (catches a run of one unbroken token)."""
        language: str | None = "en"
        """Expected language ("en"), or None to skip the language check."""
        min_script_share: float = 0.9
        """Share of letters that must be in the language's script (Latin for "en")."""
        function_words_from: int = 5
        """Answers of at least this many words must contain a function word of the language."""
        echo_ngram: int = 6
        """A run of this many words shared with the prompt's fixed wording is an echo."""
        reject_truncated: bool = True
        """Reject answers cut at the token budget (they end mid-sentence or mid-JSON)."""

        def __post_init__(self) -> None:
            if not 0 < self.min_words <= self.max_words:
                raise ValueError(f"AnswerValidation.Config: need 0 < min_words <= max_words, got {self.min_words} "
                                 f"and {self.max_words}")
            if self.language not in (None, *_LANGUAGES):
                raise ValueError(f"AnswerValidation.Config.language must be one of {_LANGUAGES} or None, "
                                 f"got {self.language!r}")
            if not 0 <= self.min_script_share <= 1 or self.echo_ngram < 2:
                raise ValueError(f"AnswerValidation.Config: min_script_share must be in [0, 1] and echo_ngram >= 2, "
                                 f"got {self.min_script_share} and {self.echo_ngram}")

    def __init__(self, config: Config) -> None:
        self.config = config

    def answer(self, answer: VlmAnswer, *, prompt: str, json_fields: tuple[str, ...] | None = None) -> Verdict:
        """Check a VLM answer: free text when `json_fields` is None, else a JSON object with those fields."""
        if not answer.ok:
            return Verdict(DropReason.VLM_REFUSED_REQUEST, f"the VLM backend refused the request: {answer.error}")
        if self.config.reject_truncated and answer.finish_reason == FinishReason.LENGTH:
            return Verdict(DropReason.ANSWER_TRUNCATED, f"the answer hit the token budget after "
                           f"{answer.usage.get('completion_tokens')} tokens; raise max_new_tokens")
        if json_fields is None:
            return self.text(answer.text, prompt=prompt)
        return self.json_object(answer.text, json_fields)

    def text(self, text: str, *, prompt: str = "") -> Verdict:
        """Check one piece of answer text; the verdict's value is the stripped text."""
        text = text.strip()
        words = _WORD.findall(text)
        config = self.config
        if not words:
            return Verdict(DropReason.ANSWER_EMPTY, f"the answer has no words: {text[:60]!r}")
        if len(words) < config.min_words:
            return Verdict(DropReason.ANSWER_TOO_SHORT, f"{len(words)} words, fewer than {config.min_words}")
        if len(words) > config.max_words or len(text) > config.max_chars:
            return Verdict(DropReason.ANSWER_TOO_LONG, f"{len(words)} words / {len(text)} characters, more than "
                           f"{config.max_words} / {config.max_chars}")
        wrong = self._language_problem(text, words)
        if wrong:
            return Verdict(DropReason.ANSWER_WRONG_LANGUAGE, wrong)
        echoed = self._echo(words, prompt)
        if echoed:
            return Verdict(DropReason.ANSWER_ECHOES_PROMPT, f"the answer repeats the prompt: {echoed!r}")
        return Verdict(None, value=text)

    def json_object(self, text: str, fields: tuple[str, ...]) -> Verdict:
        """Parse one JSON object holding `fields`; the verdict's value is the object."""
        fenced = _FENCE.match(text)
        body = fenced.group(1) if fenced else text.strip()
        try:
            value = json.loads(body)
        except ValueError as error:
            return Verdict(DropReason.ANSWER_NOT_JSON, f"JSON was asked for but the answer does not parse ({error}): "
                           f"{text[:80]!r}")
        if not isinstance(value, dict):
            return Verdict(DropReason.ANSWER_NOT_JSON, f"a JSON object was asked for, got {type(value).__name__}")
        missing = [field for field in fields if field not in value]
        if missing:
            return Verdict(DropReason.ANSWER_JSON_SHAPE, f"the JSON answer lacks {missing}; it has {sorted(value)}")
        return Verdict(None, value=value)

    def _language_problem(self, text: str, words: list[str]) -> str:
        if self.config.language is None:
            return ""
        letters = [c for c in text if c.isalpha()]
        latin = sum(unicodedata.name(c, "").startswith("LATIN") for c in letters)
        if letters and latin / len(letters) < self.config.min_script_share:
            return f"only {latin} of {len(letters)} letters are Latin script; English was asked for: {text[:60]!r}"
        lowered = {w.lower() for w in words}
        if len(words) >= self.config.function_words_from and not lowered & _ENGLISH_FUNCTION_WORDS:
            return f"{len(words)} words without one English function word: {text[:60]!r}"
        return ""

    def _echo(self, words: list[str], prompt: str) -> str:
        prompt_words = [w.lower() for w in _WORD.findall(prompt)]
        if not prompt_words:
            return ""
        answer_words = [w.lower() for w in words]
        n = self.config.echo_ngram
        if len(answer_words) < n:  # a short answer echoes when all of it is a run of the prompt
            n = len(answer_words) if len(answer_words) >= 4 else 0
        if n == 0:
            return ""
        prompt_grams = {tuple(prompt_words[i : i + n]) for i in range(len(prompt_words) - n + 1)}
        for i in range(len(answer_words) - n + 1):
            if tuple(answer_words[i : i + n]) in prompt_grams:
                return " ".join(words[i : i + n])
        return ""
