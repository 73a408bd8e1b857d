"""Answer validation (named reject reasons) and the versioned prompt library."""

import pytest

from vlaforge.annotators.answer_validation import AnswerValidation
from vlaforge.annotators.prompt_library import PromptError, available_prompts, load_prompt
from vlaforge.annotators.vlm_client import FinishReason, ResponseFormat, VlmAnswer
from vlaforge.datasets.drops import DropReason

VALIDATE = AnswerValidation(AnswerValidation.Config(max_words=40))
PROMPT = load_prompt("caption").boilerplate()


def _answer(text, finish=FinishReason.STOP, error=None):
    return VlmAnswer(text=text, model_id="m", revision="r", usage={"completion_tokens": 9}, finish_reason=finish,
                     backend="http", error=error)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("A red mug stands on a wooden table next to the robot gripper.", None),
        ("Yes.", None),
        ("   ", DropReason.ANSWER_EMPTY),
        ("...!", DropReason.ANSWER_EMPTY),
        ("word " * 41, DropReason.ANSWER_TOO_LONG),
        ("Una taza roja está sobre la mesa de madera.", DropReason.ANSWER_WRONG_LANGUAGE),
        ("ريريريريري תקציבתקציב", DropReason.ANSWER_WRONG_LANGUAGE),
        ("Describe only what is visible. Do not mention the camera", DropReason.ANSWER_ECHOES_PROMPT),
    ],
)
def test_text_checks_name_the_reason(text, reason):
    verdict = VALIDATE.answer(_answer(text), prompt=PROMPT)
    assert verdict.reason == reason
    if reason is None:
        assert verdict.value == text.strip()


def test_refused_and_truncated_answers_are_rejected():
    assert VALIDATE.answer(_answer("", FinishReason.ERROR, "HTTP 400: too long"), prompt="").reason == \
        DropReason.VLM_REFUSED_REQUEST
    truncated = VALIDATE.answer(_answer("A red mug on", FinishReason.LENGTH), prompt="")
    assert truncated.reason == DropReason.ANSWER_TRUNCATED
    keep = AnswerValidation(AnswerValidation.Config(reject_truncated=False))
    assert keep.answer(_answer("A red mug on", FinishReason.LENGTH), prompt="").ok


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"qa": [{"question": "What color?", "answer": "Red."}]}', None),
        ('```json\n{"qa": []}\n```', None),
        ("The mug is red.", DropReason.ANSWER_NOT_JSON),
        ('[{"question": "q", "answer": "a"}]', DropReason.ANSWER_NOT_JSON),
        ('{"pairs": []}', DropReason.ANSWER_JSON_SHAPE),
    ],
)
def test_json_checks(text, reason):
    verdict = VALIDATE.answer(_answer(text), prompt="", json_fields=("qa",))
    assert verdict.reason == reason
    if reason is None:
        assert "qa" in verdict.value


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="language must be one of"):
        AnswerValidation.Config(language="fr")
    with pytest.raises(ValueError, match="min_words <= max_words"):
        AnswerValidation.Config(min_words=5, max_words=2)


def test_prompts_are_versioned_package_files():
    assert set(available_prompts()) >= {"caption", "vqa", "relabel", "eqa", "plan", "trajectory"}
    prompt = load_prompt("vqa")
    assert prompt.tag == "vqa@v1" and prompt.response_format == ResponseFormat.JSON and prompt.json_fields == ("qa",)
    messages = prompt.messages(1, camera="wrist", instruction="open the drawer", count=3)
    assert messages[0]["role"] == "system"
    assert messages[1]["content"][0] == {"type": "image"}
    text = messages[1]["content"][1]["text"]
    assert 'task: "open the drawer"' in text and "Write 3 " in text
    with pytest.raises(PromptError, match="needs the field 'count'"):
        prompt.messages(1, camera="wrist", instruction="x")
    with pytest.raises(PromptError, match="has no version 9"):
        load_prompt("vqa", 9)
    with pytest.raises(PromptError, match="no prompt named 'vqa2'"):
        load_prompt("vqa2")


def test_sample_questions_are_stable_per_key():
    plan = load_prompt("plan")
    questions = {plan.question(f"ep_{i:06d}", instruction="stack the cups") for i in range(40)}
    assert len(questions) == len(plan.questions)  # every phrasing gets used
    assert plan.question("ep_000003", instruction="x") == plan.question("ep_000003", instruction="x")
