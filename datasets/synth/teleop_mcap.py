"""Bimanual teleop recordings as ROS 2 writes them into MCAP: one file per episode, CDR messages, ros2msg schemas.

Each schema is registered the way rosbag2 does it (encoding `ros2msg`, name `pkg/msg/Type`): the type's own
definition, then each dependency after a line of 80 `=` and a `MSG: pkg/Type` line. The definitions below are the
ROS 2 ones field for field (their comments left out). Channels use `message_encoding: cdr`; the file has the `ros2`
profile, zstd-compressed chunks, chunk indexes and a summary, as `mcap_ros2.writer.Writer` writes them.

Topics are the documented defaults of `datasets/bimanual.py`. Messages are written in log-time order, each
`CompressedImage` with format "jpeg"; the instruction is one `std_msgs/msg/String` message at the start.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

from mcap_ros2.writer import Writer

from vlaforge.datasets.bimanual import ACTION_TOPICS, ARM_JOINTS, ARMS, INSTRUCTION_TOPIC, STATE_TOPICS
from vlaforge.datasets.synth.teleop import TeleopRecording, make_recording
from vlaforge.datasets.timeline import NS_PER_S

TIME_MSG = "int32 sec\nuint32 nanosec\n"
HEADER_MSG = "builtin_interfaces/Time stamp\nstring frame_id\n"
COMPRESSED_IMAGE_MSG = "std_msgs/Header header\nstring format\nuint8[] data\n"
JOINT_STATE_MSG = "std_msgs/Header header\n\nstring[] name\nfloat64[] position\nfloat64[] velocity\nfloat64[] effort\n"
STRING_MSG = "string data\n"
_SEPARATOR = "=" * 80


def schema_text(definition: str, dependencies: Mapping[str, str]) -> str:
    """A ros2msg schema as rosbag2 concatenates it: the definition, then each dependency under its own header."""
    text = definition
    for name, dependency in dependencies.items():
        text += f"\n{_SEPARATOR}\nMSG: {name}\n{dependency}"
    return text


_STAMPED = {"std_msgs/Header": HEADER_MSG, "builtin_interfaces/Time": TIME_MSG}
SCHEMAS = {
    "sensor_msgs/msg/CompressedImage": schema_text(COMPRESSED_IMAGE_MSG, _STAMPED),
    "sensor_msgs/msg/JointState": schema_text(JOINT_STATE_MSG, _STAMPED),
    "std_msgs/msg/String": STRING_MSG,
}


def camera_topic(camera: str) -> str:
    """The compressed image topic of an ALOHA camera name: `/cam_high/image_raw/compressed`."""
    return f"/{camera}/image_raw/compressed"


def _header(stamp_ns: int, frame_id: str) -> dict:
    return {"stamp": {"sec": int(stamp_ns) // NS_PER_S, "nanosec": int(stamp_ns) % NS_PER_S}, "frame_id": frame_id}


def _messages(recording: TeleopRecording, joint_names: tuple[str, ...]) -> list[tuple[int, str, str, dict]]:
    """(log time, topic, schema name, message) of every message, in log-time order."""
    messages = []
    for camera, track in recording.cameras.items():
        for stamp, log, jpeg in zip(track.stamps, track.log, track.jpeg):
            body = {"header": _header(stamp, f"{camera}_optical_frame"), "format": "jpeg", "data": jpeg}
            messages.append((int(log), camera_topic(camera), "sensor_msgs/msg/CompressedImage", body))
    order = [ARM_JOINTS.index(name) for name in joint_names]
    for topics, tracks in ((STATE_TOPICS, recording.follower), (ACTION_TOPICS, recording.leader)):
        for topic, arm in zip(topics, ARMS):
            track = tracks[arm]
            for i, (stamp, log) in enumerate(zip(track.stamps, track.log)):
                body = {"header": _header(stamp, f"{arm}_base_link"), "name": list(joint_names),
                        "position": track.position[i, order].tolist(), "velocity": track.velocity[i, order].tolist(),
                        "effort": [0.0] * len(order)}
                messages.append((int(log), topic, "sensor_msgs/msg/JointState", body))
    first = min(message[0] for message in messages)
    messages.append((first, INSTRUCTION_TOPIC, "std_msgs/msg/String", {"data": recording.instruction}))
    messages.sort(key=lambda message: (message[0], message[1]))
    return messages


def write_teleop_mcap(path: pathlib.Path, recording: TeleopRecording, *, skip_topics: tuple[str, ...] = (),
                      joint_names: tuple[str, ...] = ARM_JOINTS,
                      renamed_topics: dict[str, str] | None = None) -> pathlib.Path:
    """Write one recording as an MCAP file; `skip_topics` leaves topics out (a missing camera, say),
    `joint_names` sets the order joints are published in, and `renamed_topics` publishes a topic under another
    name, as other drivers name them (`/cam_high/image/compressed`, `/camera/color/image_raw/compressed`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    renamed = renamed_topics or {}
    with open(path, "wb") as handle:
        writer = Writer(handle)
        schemas = {name: writer.register_msgdef(name, text) for name, text in SCHEMAS.items()}
        for log, topic, schema, body in _messages(recording, joint_names):
            if topic not in skip_topics:
                writer.write_message(renamed.get(topic, topic), schemas[schema], body, log_time=log,
                                     publish_time=log)
        writer.finish()
    return path


def episode_file(index: int) -> str:
    return f"episode_{index:04d}.mcap"


def write_teleop_mcap_dataset(root: pathlib.Path, n_episodes: int = 3, *, duration_s: float = 4.0, seed: int = 0,
                              **recording_options) -> pathlib.Path:
    """`n_episodes` recordings under `root` (episode_0000.mcap, ...); recording i is `make_recording(seed + i)`."""
    for index in range(n_episodes):
        recording = make_recording(seed + index, duration_s, **recording_options)
        write_teleop_mcap(pathlib.Path(root) / episode_file(index), recording)
    return pathlib.Path(root)
