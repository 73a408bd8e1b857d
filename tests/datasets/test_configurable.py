"""The configurable pattern: a nested `Config` builds its owner; configs come from JSON-ish dicts, typos named."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from vlaforge.datasets.configurable import Configurable, config_from_dict, lookup


@dataclasses.dataclass(frozen=True, kw_only=True)
class Retry:
    attempts: int = 3
    """How often to try."""
    backoff_s: float = 1.0
    """Wait before the second try."""


class Detector(Configurable):
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(Configurable.Config):
        name: str = "detector"
        """The detector's name."""
        labels: tuple[str, ...] = ()
        """What it looks for."""
        weights: tuple[tuple[str, float], ...] = ()
        """(label, weight) pairs."""
        retry: Retry = Retry(backoff_s=0.5)
        """A nested config whose default is not the class's own."""
        fallback: Retry | None = None
        """A nested config that may be absent."""
        digest: str = dataclasses.field(default="", init=False)
        """Computed, never set."""
        _cache: str = ""
        """Private: not an option."""

    def __init__(self, config: Config) -> None:
        self.config = config


class HostedDetector(Detector):
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(Detector.Config):
        url: str = "http://localhost"
        """The API root."""


class QuietDetector(Detector):
    """Nests no Config of its own: its Config is Detector's."""


def test_build_makes_the_owner_and_a_subclass_config_makes_the_subclass():
    detector = Detector.Config(name="a").build()
    hosted = HostedDetector.Config(name="b", url="https://api").build()
    assert type(detector) is Detector and detector.config.name == "a"
    assert type(hosted) is HostedDetector and hosted.config.url == "https://api"
    assert QuietDetector.Config is Detector.Config and type(QuietDetector.Config().build()) is Detector
    config = pickle.loads(pickle.dumps(HostedDetector.Config(name="c")))  # how configs travel to Ray workers
    assert type(config.build()) is HostedDetector


def test_a_config_that_belongs_to_no_component_says_so():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Loose(Configurable.Config):
        pass

    with pytest.raises(TypeError, match="Loose belongs to no component"):
        Loose().build()


def test_nested_configs_must_be_frozen_keyword_only_derived_and_owned_once():
    with pytest.raises(TypeError, match=r"Undecorated.Config must be declared @dataclasses.dataclass\(frozen=True"):
        class Undecorated(Detector):
            class Config(Detector.Config):  # would share Detector.Config's fields, and silently drop its own
                url: str = ""
    with pytest.raises(TypeError, match=r"Positional.Config fields must be keyword-only, got positional \['x'\]"):
        class Positional(Configurable):
            @dataclasses.dataclass(frozen=True)
            class Config(Configurable.Config):
                x: int = 1
                """x."""
    with pytest.raises(TypeError, match="Unrelated.Config must derive from Detector.Config"):
        class Unrelated(Detector):
            @dataclasses.dataclass(frozen=True, kw_only=True)
            class Config(Configurable.Config):
                pass
    with pytest.raises(TypeError, match="Twice.Config is already Detector.Config; nest a subclass"):
        class Twice(Detector):
            Config = Detector.Config


def test_config_from_dict_makes_tuples_and_nested_configs():
    config = config_from_dict(Detector.Config, {
        "name": "d", "labels": ["mug", "shelf"], "weights": [["mug", 1.0], ["shelf", 0.5]],
        "retry": {"attempts": 5}, "fallback": {"backoff_s": 2.0},
    }, where="recipe detectors[d]")
    assert config.labels == ("mug", "shelf") and config.weights == (("mug", 1.0), ("shelf", 0.5))
    assert config.retry == Retry(attempts=5, backoff_s=0.5)  # the field's default, changed where the dict says
    assert config.fallback == Retry(attempts=3, backoff_s=2.0)  # no default instance: the class's defaults
    assert hash(config)  # all tuples, so the frozen config hashes
    subclass = config_from_dict(HostedDetector.Config, {"url": "https://x"}, where="hosted")
    assert type(subclass) is HostedDetector.Config and subclass.url == "https://x"


def test_config_from_dict_names_the_unknown_field_the_closest_one_and_where():
    with pytest.raises(ValueError, match=r"recipe detectors\[d\]: unknown option 'lables'; did you mean 'labels'\? "
                                         r"Options: fallback, labels, name, retry, weights"):
        config_from_dict(Detector.Config, {"lables": ["mug"]}, where="recipe detectors[d]")
    with pytest.raises(ValueError, match=r"recipe\.retry: unknown option 'atempts'; did you mean 'attempts'\?"):
        config_from_dict(Detector.Config, {"retry": {"atempts": 1}}, where="recipe")
    with pytest.raises(ValueError, match=r"d: unknown option 'zzz'\. Options: "):
        config_from_dict(Detector.Config, {"zzz": 1}, where="d")


def test_computed_private_and_given_fields_are_not_options():
    for key in ("digest", "_cache"):
        with pytest.raises(ValueError, match=f"unknown option '{key}'"):
            config_from_dict(Detector.Config, {key: "x"}, where="d")
    config = config_from_dict(Detector.Config, {"labels": ["a"]}, where="d", given={"name": "fixed"})
    assert config.name == "fixed" and config.labels == ("a",)
    with pytest.raises(ValueError, match="d: 'name' is set elsewhere, not as an option here"):
        config_from_dict(Detector.Config, {"name": "other"}, where="d", given={"name": "fixed"})


def test_lookup_suggests_the_closest_name_and_lists_the_rest():
    registry = {"caption": 1, "vqa": 2}
    assert lookup(registry, "vqa", what="generator") == 2
    with pytest.raises(ValueError, match=r"unknown generator 'captoin'; did you mean 'caption'\? "
                                         r"Known generators: caption, vqa"):
        lookup(registry, "captoin", what="generator")
    with pytest.raises(ValueError, match=r"unknown generator None\. Known generators: caption, vqa"):
        lookup(registry, None, what="generator")  # type: ignore[arg-type]
