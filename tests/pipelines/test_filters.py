import numpy as np
import pytest

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.synth.episodes import make_episode
from vlaforge.pipelines.filters import IdleTrimmer, MinLengthFilter, NonFiniteFilter, SuccessFilter


def test_nan_action_is_quarantined_with_step_and_dimension():
    good, bad = make_episode("good"), make_episode("bad", seed=1)
    bad.action[17, 3] = np.nan
    stage = NonFiniteFilter.Config().build()
    kept = stage([good, bad])
    assert [e.episode_id for e in kept] == ["good"]
    (drop,) = stage.ledger.take()
    assert drop.quarantined and drop.reason is DropReason.NONFINITE and drop.episode == "bad"
    assert "action[17, 3]" in drop.message and "joint_velocity_3" in drop.message and "synth.tfrecord" in drop.message


def test_inf_state_is_quarantined_too():
    episode = make_episode()
    episode.state[0, 0] = np.inf
    stage = NonFiniteFilter.Config().build()
    assert stage([episode]) == []
    assert "state[0, 0]" in stage.ledger.take()[0].message


@pytest.mark.parametrize("keep_failed, kept", [(False, ["ok", "unknown"]), (True, ["ok", "failed", "unknown"])])
def test_failed_episodes_dropped_unless_kept(keep_failed, kept):
    batch = [make_episode("ok"), make_episode("failed", success=False), make_episode("unknown", success=None)]
    stage = SuccessFilter.Config(keep_failed=keep_failed).build()
    assert [e.episode_id for e in stage(batch)] == kept
    drops = stage.ledger.take()
    assert [(d.episode, d.reason, d.quarantined) for d in drops] == (
        [] if keep_failed else [("failed", DropReason.FAILED_EPISODE, False)]
    )


def test_idle_head_and_tail_are_trimmed_keeping_one_rest_step():
    episode = make_episode(n_steps=50, idle_head=6, idle_tail=4)
    (trimmed,) = IdleTrimmer.Config(keep=1).build()([episode])
    assert len(trimmed) == 50 - 5 - 3
    assert trimmed.first_step == 5
    assert trimmed.flags == {"idle_trimmed_head": 5, "idle_trimmed_tail": 3}
    np.testing.assert_array_equal(trimmed.state, episode.state[5:47])
    assert trimmed.frames["wrist"][0] == episode.frames["wrist"][5]
    np.testing.assert_array_equal(trimmed.timestamps, episode.timestamps[5:47])


def test_episode_without_motion_is_dropped():
    episode = make_episode(n_steps=20)
    episode.state[:] = 1.0
    stage = IdleTrimmer.Config().build()
    assert stage([episode]) == []
    assert stage.ledger.take()[0].reason is DropReason.ALL_IDLE


def test_short_episodes_are_dropped_with_their_length():
    stage = MinLengthFilter.Config(min_steps=30).build()
    kept = stage([make_episode("long", n_steps=30), make_episode("short", n_steps=29)])
    assert [e.episode_id for e in kept] == ["long"]
    (drop,) = stage.ledger.take()
    assert drop.reason is DropReason.TOO_SHORT and drop.steps == 29


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="min_steps must be >= 1, got 0"):
        MinLengthFilter.Config(min_steps=0)


def test_trimming_lazy_frames_keeps_them_lazy_and_reads_none():
    from vlaforge.datasets.teleop_frames import LazyFrames

    episode = make_episode(n_steps=30, idle_head=6, idle_tail=5)
    eager = {camera: list(frames) for camera, frames in episode.frames.items()}
    reads = []

    def reader(frames):
        return lambda index: reads.append(index) or frames[index]

    episode.frames = {camera: LazyFrames(reader(frames), np.arange(len(frames))) for camera, frames in eager.items()}
    batch = NonFiniteFilter.Config().build()([episode])
    (trimmed,) = MinLengthFilter.Config().build()(IdleTrimmer.Config().build()(batch))
    assert reads == [] and all(isinstance(frames, LazyFrames) for frames in trimmed.frames.values())
    assert list(trimmed.frames["wrist"]) == eager["wrist"][5:26]
