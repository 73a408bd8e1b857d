"""An ingest job from a format name and plain options: what `vlaforge ingest` and the `ingest` flow pass in."""

import pytest

from vlaforge.datasets.droid_rlds import DroidRldsSource
from vlaforge.datasets.frames import FrameConfig
from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job, source_config


def test_source_options_set_fields_of_the_formats_config():
    frames = FrameConfig(size=(90, 160))
    config = source_config("droid", "/data/droid/1.0.1", frames,
                           {"files_per_unit": 2, "action_features": ["steps/action"]})
    assert type(config) is DroidRldsSource.Config
    assert (config.root, config.frames, config.files_per_unit) == ("/data/droid/1.0.1", frames, 2)
    assert config.action_features == ("steps/action",)


def test_a_misspelt_or_reserved_source_option_is_named():
    with pytest.raises(ValueError, match=r"droid source: unknown option 'files_per_unti'; did you mean "
                                         r"'files_per_unit'\? Options: "):
        source_config("droid", "/data", FrameConfig(), {"files_per_unti": 2})
    with pytest.raises(ValueError, match="droid source: 'frames' is set elsewhere"):  # --frame-size, --jpeg-quality
        source_config("droid", "/data", FrameConfig(), {"frames": {}})


def test_a_format_of_vl_rows_is_refused_by_the_robot_ingest():
    with pytest.raises(ValueError, match="vl-parquet yields vl_rows, not robot episodes"):
        build_ingest_job("vl-parquet", "/data/llava.json", "/out", IngestOptions())


def test_ingest_options_from_json():
    options = IngestOptions.from_dict({"frame_size": [90, 160], "min_steps": 3})
    assert options.frame_size == (90, 160) and options.min_steps == 3
    with pytest.raises(ValueError, match=r"ingest options: unknown option 'min_step'; did you mean 'min_steps'\?"):
        IngestOptions.from_dict({"min_step": 3})
