"""Checks every VLM answer before it becomes training data; a rejected answer carries a named `DropReason`.

The checks are gates, each counted (texts checked, texts dropped) so `summary.json` reports each gate's drop rate:

- **form**: the backend refused the request; the answer is empty; it was cut at the token budget; it is too short
  or too long; it is not in the expected language (script and function words, for English); it echoes the prompt's
  fixed wording (a run of `echo_ngram` words, or the whole answer when it is short); and, where JSON was asked, it
  is one JSON object with the required fields (a Markdown code fence around it is tolerated);
- **refusal**: the model declined to answer (`answer_content.refusal`);
- **facts**: an embodied answer claims what the robot's recorded state contradicts (`facts`);
- **reference**: a relabelled short or multiple-choice answer disagrees with the reference answer (`reference`);
- **near_duplicate**: an answer repeats an earlier answer about the same image (`distinct`);
- **judge**: a VLM judge scored the answer below its threshold (`answer_judge.py`, a stage of its own).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import json
import re
import unicodedata
from typing import Any

from vlaforge.annotators import answer_content
from vlaforge.annotators.vlm_client import FinishReason, VlmAnswer
from vlaforge.datasets.drops import DropReason

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_ENGLISH_FUNCTION_WORDS = frozenset(
    "a an the is are was were be of on in to and or with it its this that these those at for from by has have "
    "there no not yes into onto near next left right above below under behind".split())
_LANGUAGES = ("en",)


class Gate(str, enum.Enum):
    """The named quality gates, in the order an answer meets them."""

    FORM = "form"
    REFUSAL = "refusal"
    FACTS = "facts"
    REFERENCE = "reference"
    NEAR_DUPLICATE = "near_duplicate"
    JUDGE = "judge"


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
        reject_refusals: bool = True
        """Reject answers in which the model declines to answer."""
        short_words: int = 3
        """A reference answer of at most this many words is short: its relabel must give the same answer."""
        near_duplicate_jaccard: float = 0.8
        """Two answers about one image sharing at least this share of their words (Jaccard) repeat each other."""

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
            if not 0 < self.near_duplicate_jaccard <= 1 or self.short_words < 1:
                raise ValueError(f"AnswerValidation.Config: near_duplicate_jaccard must be in (0, 1] and "
                                 f"short_words >= 1, got {self.near_duplicate_jaccard} and {self.short_words}")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.tally: collections.Counter[tuple[str, str]] = collections.Counter()
        """(gate, "checked" | "dropped") -> texts, since the last `take_gate_rows`."""

    def _gate(self, gate: Gate, verdict: Verdict) -> Verdict:
        self.tally[(gate.value, "checked")] += 1
        self.tally[(gate.value, "dropped")] += not verdict.ok
        return verdict

    def take_gate_rows(self) -> list[dict[str, Any]]:
        """Rows of the gates table (gate, checked, dropped) counted since the last call."""
        gates = sorted({gate for gate, _ in self.tally})
        rows = [{"gate": g, "checked": self.tally[(g, "checked")], "dropped": self.tally[(g, "dropped")]}
                for g in gates]
        self.tally.clear()
        return rows

    def answer(self, answer: VlmAnswer, *, prompt: str, json_fields: tuple[str, ...] | None = None) -> Verdict:
        """Check a VLM answer: free text when `json_fields` is None, else a JSON object with those fields."""
        if not answer.ok:
            return self._gate(Gate.FORM, Verdict(DropReason.VLM_REFUSED_REQUEST,
                                                 f"the VLM backend refused the request: {answer.error}"))
        if self.config.reject_truncated and answer.finish_reason == FinishReason.LENGTH:
            return self._gate(Gate.FORM, Verdict(DropReason.ANSWER_TRUNCATED, f"the answer hit the token budget "
                                                 f"after {answer.usage.get('completion_tokens')} tokens; raise "
                                                 "max_new_tokens"))
        if json_fields is None:
            return self.text(answer.text, prompt=prompt)
        return self._gate(Gate.FORM, self.json_object(answer.text, json_fields))

    def text(self, text: str, *, prompt: str = "") -> Verdict:
        """Check one piece of answer text (the form gate, then the refusal gate); the verdict's value is the
        stripped text."""
        verdict = self._gate(Gate.FORM, self._form(text, prompt))
        if not verdict.ok or not self.config.reject_refusals:
            return verdict
        refused = answer_content.refusal(verdict.value)
        return self._gate(Gate.REFUSAL, Verdict(DropReason.ANSWER_REFUSAL, refused) if refused else verdict)

    def facts(self, answer: str, facts: dict[str, str]) -> Verdict:
        """The facts gate: `answer` against the state the generator computed from the robot's own recording."""
        wrong = answer_content.contradicted_facts(answer, facts)
        return self._gate(Gate.FACTS, Verdict(DropReason.ANSWER_CONTRADICTS_STATE, wrong) if wrong else
                          Verdict(None, value=answer))

    def reference(self, question: str, reference: str, answer: str) -> Verdict:
        """The reference gate: a relabel of a short or multiple-choice answer must give the same answer."""
        wrong = answer_content.disagrees_with_reference(question, reference, answer,
                                                        short_words=self.config.short_words)
        return self._gate(Gate.REFERENCE, Verdict(DropReason.ANSWER_DISAGREES_WITH_REFERENCE, wrong) if wrong else
                          Verdict(None, value=answer))

    def distinct(self, answer: str, earlier: list[str]) -> Verdict:
        """The near-duplicate gate: `answer` against the earlier answers about the same image."""
        repeated = answer_content.repeats(answer, earlier, jaccard=self.config.near_duplicate_jaccard)
        return self._gate(Gate.NEAR_DUPLICATE, Verdict(DropReason.ANSWER_NEAR_DUPLICATE, repeated) if repeated else
                          Verdict(None, value=answer))

    def _form(self, text: str, prompt: str) -> Verdict:
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
