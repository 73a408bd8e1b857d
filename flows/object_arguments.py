"""`s3://` URLs on the command line: every verb that reads or writes datasets, corpora, runs or policies by path
accepts them, through a local mirror (`pipelines/object_mirror.py`).

Before the verb runs, each `s3://` value of a path option is replaced by its mirror directory: an input is pulled
(whole for shards and policies, which are read; without its shards for `corpus build`, which reads only manifests and
statistics); an output is pulled without its shards (its records, markers and checkpoints: what a rerun resumes
from) and registered, so the job tasks and the trainer push while the run goes on. When the verb ends, each output is
pushed in commit order, whether the run finished or not: what it committed is kept, as on a local disk.

`--corpus` is left alone: the trainer and the corpus verbs stream a corpus's shards by URL (`s3://` included), which
is the point of a corpus.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from vlaforge.pipelines.object_mirror import ObjectMirror, is_object_url, register

OUTPUT_OPTIONS = ("--output",)
INPUT_OPTIONS = {"--shards": (), "--init-policy": (), "--policy": (), "--robot": (".tar",), "--vl": (".tar",)}
"""Input options that may name an object-store dataset or policy -> the suffixes its pull leaves behind."""
_FILE_SUFFIXES = (".json",)
"""An output URL ending so names a file (`corpus build --output s3://b/corpora/mix.json`): its folder is mirrored."""


@dataclasses.dataclass
class MirroredArguments:
    """The command line with mirror paths for URLs, and the outputs to push when the verb ends."""

    argv: list[str]
    outputs: list[ObjectMirror]

    def push(self) -> None:
        for mirror in self.outputs:
            mirror.push()


def mirrored_arguments(argv: Sequence[str]) -> MirroredArguments:
    """Replace each `s3://` value of a path option by its mirror (pulling inputs and outputs first); `--overwrite`
    clears an output's prefix as well as its mirror."""
    overwrite = "--overwrite" in argv
    result, outputs = [], []
    for option, value in _pairs(argv):
        if option is None or not _is_url_value(value):
            result.append(value)
            continue
        name, url = _split_name(value)
        file_name = ""
        if option in OUTPUT_OPTIONS and url.endswith(_FILE_SUFFIXES):
            url, file_name = url.rsplit("/", 1)
        mirror = ObjectMirror.of(url)
        if option in OUTPUT_OPTIONS:
            if overwrite:
                mirror.clear()
            mirror.pull(skip_suffixes=(".tar",))
            register(mirror)
            outputs.append(mirror)
        else:
            mirror.pull(skip_suffixes=INPUT_OPTIONS[option])
        local = mirror.local / file_name if file_name else mirror.local
        result.append(f"{name}={local}" if name else str(local))
    return MirroredArguments(argv=result, outputs=outputs)


def _pairs(argv: Sequence[str]) -> Iterator[tuple[str | None, str]]:
    """Each argument with the path option it is the value of (None for anything else); `--option=value` is taken
    as `--option value`."""
    previous = None
    for argument in argv:
        option, sep, value = argument.partition("=")
        if sep and option in _OPTIONS:
            yield None, option
            yield option, value
            previous = None
            continue
        yield (previous if previous in _OPTIONS else None), argument
        previous = argument if argument.startswith("--") else None


_OPTIONS = (*OUTPUT_OPTIONS, *INPUT_OPTIONS)


def _is_url_value(value: str) -> bool:
    return is_object_url(_split_name(value)[1])


def _split_name(value: str) -> tuple[str, str]:
    """`NAME=s3://...` (corpus build's named components) -> ("NAME", "s3://..."); else ("", value)."""
    head, sep, tail = value.partition("=")
    if sep and is_object_url(tail) and "/" not in head:
        return head, tail
    return "", value


def local_output(url: str, *, overwrite: bool = False) -> tuple[str, ObjectMirror | None]:
    """For a flow given an output path directly (a deployment): an `s3://` output becomes its pulled, registered
    mirror (the job tasks then push as units finish; the caller pushes at the end); a local path stays as it is."""
    if not is_object_url(url):
        return url, None
    mirror = ObjectMirror.of(url)
    if overwrite:
        mirror.clear()
    mirror.pull(skip_suffixes=(".tar",))
    register(mirror)
    return str(mirror.local), mirror


def local_input(url: str, *, skip_suffixes: tuple[str, ...] = ()) -> str:
    """For a flow given an input path directly: an `s3://` dataset pulled to its mirror; a local path as it is."""
    if not is_object_url(url):
        return url
    mirror = ObjectMirror.of(url)
    mirror.pull(skip_suffixes=skip_suffixes)
    return str(mirror.local)
