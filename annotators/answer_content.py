"""Content checks of VLM answers (what they say, not their form): refusals, claims the robot's own state contradicts,
relabels that disagree with the reference answer, and answers repeating an earlier answer about the same image.

Each check is a pure function returning a message when the answer fails it, "" when it passes;
`AnswerValidation` (`answer_validation.py`) runs them as named gates and counts every drop.

- **Refusal**: the model declined ("I'm sorry, but I can't help with that", "As an AI language model..."), matched
  at the start of the answer or as a whole clause, so "I can't see a cup" is an answer, not a refusal.
- **Facts**: the embodied QA generator computes facts from the recorded state (gripper open or closed, arm moving or
  still, how far into the episode); an answer claiming the opposite (the gripper "is holding the mug" while it is
  open, the arm "is not moving" while it moves, the task "is complete" a third of the way in) is rejected. Claims
  are matched per clause, and a negation ("is not holding", "nothing") flips them.
- **Reference agreement**: a relabelled answer to a short question (a reference of at most `short_words` words:
  yes/no, a number, a name) or a multiple-choice question must give the reference's answer: the same option letter;
  the same first yes or no; or the reference's words in a row, not negated (normalised as VQA scoring does: case,
  punctuation, articles, number words).
- **Near-duplicates**: two answers about one image whose word sets overlap at least `jaccard` (Jaccard) say the same
  thing twice; the later one goes.
"""

from __future__ import annotations

import re

_REFUSAL_OPENINGS = re.compile(
    r"^\s*(?:i\s*(?:'m| am)\s+(?:sorry|afraid|unable|not able)|sorry\b|i\s+apologi[sz]e|"
    r"i\s+(?:can(?:'|no)t|cannot|won't|will not)\s+(?:help|assist|provide|comply|answer|do that|fulfil)|"
    r"as an? (?:ai|language model|large language model)|unfortunately,? i\s+(?:can(?:'|no)t|cannot))",
    re.IGNORECASE)
_REFUSAL_CLAUSES = re.compile(
    r"\b(?:i\s+(?:can(?:'|no)t|cannot)\s+(?:help|assist)\s+with\s+(?:that|this)|"
    r"i\s*(?:'m| am)\s+(?:not able|unable)\s+to\s+(?:help|assist|provide|comply)|against my (?:guidelines|policy))\b",
    re.IGNORECASE)
_CLAUSE = re.compile(r"[.;!?]|\bbut\b|\bwhile\b|\bwhereas\b", re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:not|no|nothing|never|isn't|aren't|wasn't|doesn't|don't|hasn't|without|empty|yet to)\b"
                       r"|n't\b", re.IGNORECASE)
_HOLDING = re.compile(r"\b(?:hold(?:s|ing)?|grasp(?:s|ing|ed)?|grip(?:s|ping|ped)?|carr(?:y|ies|ying)|"
                      r"clutch(?:es|ing)?|picked up|gripper (?:is )?closed)\b", re.IGNORECASE)
_OPEN_GRIPPER = re.compile(r"\bgripper (?:is |remains |stays )?(?:open|opened|released)\b", re.IGNORECASE)
_MOVING = re.compile(r"\b(?:is|are|keeps|still)\s+(?:moving|in motion|reaching|lifting|lowering|rotating)\b",
                     re.IGNORECASE)
_STILL = re.compile(r"\b(?:stationary|motionless|at rest|idle|not moving|standing still|paused|stopped)\b",
                    re.IGNORECASE)
_FINISHED = re.compile(r"\b(?:task|job)\s+(?:is|has been)\s+(?:complete|completed|finished|done)\b|"
                       r"\b(?:has|have)\s+(?:completed|finished)\s+the\s+task\b", re.IGNORECASE)
_NOT_STARTED = re.compile(r"\b(?:has not|hasn't|not yet)\s+(?:started|begun)\b|\bjust (?:started|begun)\b",
                          re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NEGATORS = frozenset({"not", "no", "never", "isn't", "aren't", "wasn't", "neither", "nor"})
_ARTICLES = frozenset({"a", "an", "the"})
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_OPTION = re.compile(r"^\s*\(?([A-Ha-h])\)?(?:[.):]|\s|$)")
_OPTION_IN_TEXT = re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-Ha-h])\)?(?:[.):]|\s|$)",
                             re.IGNORECASE)
_CHOICES_IN_QUESTION = re.compile(r"(?:^|\n)\s*\(?[A-D]\)?[.)]\s+\S|\([A-D]\)\s+\S", re.MULTILINE)
_BARE_OPTION = re.compile(r"\(?[A-H]\)?\.?")


def refusal(text: str) -> str:
    """Why `text` is a refusal, or ""."""
    found = _REFUSAL_OPENINGS.search(text) or _REFUSAL_CLAUSES.search(text)
    return f"the model refused instead of answering: {text[:60]!r}" if found else ""


def _asserted(pattern: re.Pattern, text: str) -> bool:
    """Whether a clause of `text` matches `pattern` without a negation before the match in that clause."""
    for clause in _CLAUSE.split(text):
        match = pattern.search(clause)
        if match and not _NEGATION.search(clause[: match.start()]):
            return True
    return False


def _denied(pattern: re.Pattern, text: str) -> bool:
    """Whether a clause matches `pattern` with a negation before it ("is not holding")."""
    for clause in _CLAUSE.split(text):
        match = pattern.search(clause)
        if match and _NEGATION.search(clause[: match.start()]):
            return True
    return False


def contradicted_facts(answer: str, facts: dict[str, str]) -> str:
    """Why `answer` contradicts the state the facts record (keys gripper, motion, progress), or ""."""
    gripper, motion = facts.get("gripper"), facts.get("motion")
    if gripper == "open" and _asserted(_HOLDING, answer):
        return f"the answer says the gripper holds something, but the recorded gripper is open: {answer[:60]!r}"
    if gripper == "closed" and _asserted(_OPEN_GRIPPER, answer):
        return f"the answer says the gripper is open, but the recorded gripper is closed: {answer[:60]!r}"
    if motion == "still" and _asserted(_MOVING, answer):
        return f"the answer says the arm is moving, but it is recorded still: {answer[:60]!r}"
    if motion == "moving" and (_asserted(_STILL, answer) or _denied(re.compile(r"\bmoving\b"), answer)):
        return f"the answer says the arm is still, but it is recorded moving: {answer[:60]!r}"
    progress = facts.get("progress")
    if progress is not None and progress.isdigit():
        if int(progress) < 90 and _asserted(_FINISHED, answer):
            return f"the answer says the task is finished, but only {progress}% of the episode has passed"
        if int(progress) > 50 and _asserted(_NOT_STARTED, answer):
            return f"the answer says the task has barely started, but {progress}% of the episode has passed"
    return ""


def normalized_words(text: str) -> list[str]:
    """Lower case words without punctuation or articles, number words as digits (VQA's answer normalisation)."""
    return [_NUMBERS.get(w, w) for w in _WORD.findall(text.lower().replace("-", " ")) if w not in _ARTICLES]


def option_letter(text: str) -> str:
    """The multiple-choice letter an answer gives ("B", "(B) a cat", "The answer is B."), or ""."""
    found = _OPTION.match(text) or _OPTION_IN_TEXT.search(text)
    return found.group(1).upper() if found else ""


def disagrees_with_reference(question: str, reference: str, answer: str, *, short_words: int) -> str:
    """Why a relabelled `answer` gives another answer than `reference`, for short and multiple-choice questions;
    "" when it agrees or the reference is a long free answer (which a relabel may rightly rewrite)."""
    letter = option_letter(reference)
    multiple_choice = bool(letter) and (bool(_CHOICES_IN_QUESTION.search(question)) or
                                        bool(_BARE_OPTION.fullmatch(reference.strip())))
    if multiple_choice:
        new = option_letter(answer)
        if new != letter:
            return f"the reference picks option {letter}, the relabel {new or 'none'}: {answer[:60]!r}"
        return ""
    expected = normalized_words(reference)
    if not expected or len(expected) > short_words:
        return ""
    if not _gives(normalized_words(answer), expected):
        return f"the reference answers {reference.strip()!r}, the relabel {answer.strip()[:60]!r}"
    return ""


def _gives(words: list[str], expected: list[str]) -> bool:
    """Whether normalised answer `words` give the `expected` short answer: the same first yes/no for a yes/no
    answer, else the expected words in a row, not negated ("not a cat" does not give "cat")."""
    if expected[0] in ("yes", "no") and len(expected) == 1:
        return next((w for w in words if w in ("yes", "no")), None) == expected[0]
    for start in range(len(words) - len(expected) + 1):
        if words[start : start + len(expected)] == expected and (start == 0 or words[start - 1] not in _NEGATORS):
            return True
    return False


def repeats(answer: str, earlier: list[str], *, jaccard: float) -> str:
    """Why `answer` repeats one of `earlier` (answers about the same image), or ""."""
    words = set(normalized_words(answer))
    for previous in earlier:
        others = set(normalized_words(previous))
        union = words | others
        if union and len(words & others) / len(union) >= jaccard:
            return f"the answer repeats an earlier one about the same image: {answer[:60]!r} ~ {previous[:60]!r}"
    return ""
