"""Versioned prompts, shipped as package data: `annotators/prompts/<name>.v<version>.json`.

A prompt file holds what the VLM is asked (`system`, `user`: `string.Template` text with `$fields`), how it must
answer (`response_format`, `json_fields`, `max_new_tokens`) and the questions a generated *sample* asks (so the
question a model trains on is versioned with the prompt that made its answer). A changed prompt is a new file with
the next version, never an edit: provenance records `<name>@v<version>`, which must keep meaning the same text.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import re
import string
from typing import Any

from vlaforge.annotators.vlm_client import Message, ResponseFormat
from vlaforge.pipelines.vl_samples import system, user

# Beside this module (package data); importlib.resources cannot open a folder of a namespace package here.
PROMPTS_DIR = pathlib.Path(__file__).with_name("prompts")
_FILE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>[0-9]+)\.json$")
_FIELDS = ("name", "version", "purpose", "system", "user", "response_format", "max_new_tokens", "json_fields",
           "questions")


class PromptError(ValueError):
    """A prompt that does not exist, a malformed prompt file, or a template field left unfilled."""


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One version of one prompt."""

    name: str
    version: int
    purpose: str
    system: str
    user: str
    response_format: ResponseFormat
    max_new_tokens: int
    json_fields: tuple[str, ...]
    questions: tuple[str, ...]

    @property
    def tag(self) -> str:
        """What provenance records: `caption@v1`."""
        return f"{self.name}@v{self.version}"

    def render(self, template: str, **fields: Any) -> str:
        try:
            return string.Template(template).substitute({k: str(v) for k, v in fields.items()})
        except KeyError as missing:
            raise PromptError(f"prompt {self.tag} needs the field {missing}; pass it to render") from None

    def messages(self, n_images: int, **fields: Any) -> list[Message]:
        """The VLM conversation: the system text, then one user turn of `n_images` images and the filled text."""
        turns = [system(self.system)] if self.system else []
        return [*turns, user(*[None] * n_images, self.render(self.user, **fields))]

    def boilerplate(self) -> str:
        """The prompt's fixed wording (fields removed): an answer repeating it echoes the prompt."""
        return string.Template(f"{self.system}\n{self.user}").safe_substitute(
            {name: " " for name in _template_fields(self.user)})

    def question(self, key: str, **fields: Any) -> str:
        """The sample question for `key`: one of `questions`, chosen by a hash of the key (stable across runs)."""
        if not self.questions:
            raise PromptError(f"prompt {self.tag} has no sample questions")
        index = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % len(self.questions)
        return self.render(self.questions[index], **fields)


def _template_fields(template: str) -> set[str]:
    return {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(template)
            if m.group("named") or m.group("braced")}


def available_prompts() -> dict[str, list[int]]:
    """Prompt name -> its versions, ascending."""
    versions: dict[str, list[int]] = {}
    for entry in PROMPTS_DIR.iterdir():
        match = _FILE.match(entry.name)
        if match:
            versions.setdefault(match["name"], []).append(int(match["version"]))
    return {name: sorted(v) for name, v in sorted(versions.items())}


@functools.lru_cache(maxsize=None)
def load_prompt(name: str, version: int | None = None) -> Prompt:
    """A prompt by name, at `version` (None: the latest)."""
    known = available_prompts()
    if name not in known:
        raise PromptError(f"no prompt named {name!r}; known prompts: {', '.join(known)}")
    version = known[name][-1] if version is None else version
    if version not in known[name]:
        raise PromptError(f"prompt {name!r} has no version {version}; versions: {known[name]}")
    file = f"{name}.v{version}.json"
    data = json.loads((PROMPTS_DIR / file).read_text("utf-8"))
    missing = [field for field in _FIELDS if field not in data]
    if missing or data["name"] != name or data["version"] != version:
        raise PromptError(f"prompts/{file}: missing fields {missing} or name/version disagree with the file name")
    return Prompt(
        name=name, version=version, purpose=data["purpose"], system=data["system"], user=data["user"],
        response_format=ResponseFormat(data["response_format"]), max_new_tokens=int(data["max_new_tokens"]),
        json_fields=tuple(data["json_fields"]), questions=tuple(data["questions"]),
    )
