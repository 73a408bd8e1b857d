"""In-house teleop recordings as ROS 2 MCAP logs, decoded without ROS, resampled onto the 30 Hz timeline.

**One MCAP file is one episode.** Every `*.mcap` under the root (recursively, in sorted path order) is read; the
episode id is the dataset name plus the file's path without its suffix. A file is streamed record by record with
`mcap`'s `StreamReader` (one decompressed chunk in memory at a time, in file order, never re-sorted), and messages
of the configured topics are decoded from CDR with `mcap-ros2-support`'s schema-driven decoder. That first pass keeps
the joint values, every stamp, and for each image only where its message is and whether its JPEG can be stored; a
frame is read again from its chunk when its sample is built (`mcap_messages.py`), so memory stays flat however long
the log is:

- `sensor_msgs/msg/CompressedImage` per camera topic (`cameras` maps topics to canonical cameras); JPEGs already
  at the target size pass through byte for byte;
- `sensor_msgs/msg/JointState` for the follower arms (`state_topics`, the state) and the leader arms
  (`action_topics`, the action); joints are picked by name (`joint_names`, per arm), so the order a driver
  publishes them in does not matter; a message without names is read positionally;
- `std_msgs/msg/String` on `instruction_topic`: each distinct text, in order, is an instruction.

Camera calibration is kept where the log has it: each camera's first `sensor_msgs/msg/CameraInfo` (on
`camera_info_topics`, by default `<image topic's namespace>/camera_info`) gives the intrinsics, and the static
transforms on `/tf_static` (`tf2_msgs/msg/TFMessage`) place its optical frame in `base_frame`; every episode of
the file carries the result (`Episode.calibration`, `meta.json`'s `calibration`). A camera without either (a wrist
camera on a moving arm) is listed in the episode's flags under `calibration_missing`, with the reason.

Timestamps come from each message's `header.stamp` (the sensor's own time) and fall back to the MCAP log time for a
message whose stamp is zero (unset); `timestamps="log_time"` uses log times throughout. The defaults are the
bimanual robot's (`datasets/bimanual.py`). A truncated or corrupt file, a message that does not decode, a topic
with the wrong message type and a frame that is not a JPEG are quarantined with a message naming the file, the
topic and the message index; the timeline's own checks (order, missing streams, gaps) follow `teleop.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from array import array
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import zstandard
from mcap.exceptions import EndOfFile, McapError
from mcap.records import Channel, Header, Message, Schema
from mcap.stream_reader import CRCValidationError
from mcap_ros2.decoder import DecoderFactory

from vlaforge.datasets.bimanual import ACTION_TOPICS, ARM_JOINTS, ARMS, INSTRUCTION_TOPIC, STATE_TOPICS, mcap_cameras
from vlaforge.datasets.calibration import FrameTree, ros_calibration
from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.mcap_messages import McapMessages, MessageLocation, field_offset, located_records
from vlaforge.datasets.schema import safe_key_part
from vlaforge.datasets.source import SourceError, WorkUnit
from vlaforge.datasets.stream_remap import remap_fix
from vlaforge.datasets.teleop import (
    FrameError,
    FrameReadError,
    FrameStream,
    Recording,
    TeleopConfig,
    TeleopSource,
    VectorStream,
    check_cameras,
)
from vlaforge.datasets.teleop_frames import check_jpeg, stored_jpeg
from vlaforge.datasets.timeline import MissingStreamError

COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
JOINT_STATE = "sensor_msgs/msg/JointState"
STRING = "std_msgs/msg/String"
TIMESTAMP_SOURCES = ("header", "log_time")
_REPAIR = "re-copy the file from the robot, or rebuild its index and summary with `mcap recover`"


class _FileProblem(Exception):
    """The file (or one message in it) cannot be used; becomes a quarantine row."""

    def __init__(self, reason: DropReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass
class _Joints:
    """One JointState topic as read: stamps [m], positions and velocities [m * len(joint_names)], flat (8 bytes a
    value, where lists of floats would take 4 times that)."""

    stamps: array = dataclasses.field(default_factory=lambda: array("q"))
    position: array = dataclasses.field(default_factory=lambda: array("d"))
    velocity: array = dataclasses.field(default_factory=lambda: array("d"))
    columns: dict[tuple[str, ...], list[int]] = dataclasses.field(default_factory=dict)
    """Message joint names -> the index of each configured joint in them (cached: drivers repeat one order)."""


@dataclasses.dataclass
class _Images:
    """One CompressedImage topic as read: stamps [m], where each message is, and which frames cannot be stored."""

    stamps: array = dataclasses.field(default_factory=lambda: array("q"))
    offsets: array = dataclasses.field(default_factory=lambda: array("q"))
    """`MessageLocation.offset` of each message."""
    ordinals: array = dataclasses.field(default_factory=lambda: array("q"))
    """`MessageLocation.ordinal` of each message."""
    starts: array = dataclasses.field(default_factory=lambda: array("q"))
    """Where the JPEG (the CDR `data` field) starts in each message's bytes, so reading it again needs no decode;
    -1 where it could not be found there (then the message is decoded again)."""
    lengths: array = dataclasses.field(default_factory=lambda: array("q"))
    """The JPEG's length in bytes."""
    bad: dict[int, ValueError] = dataclasses.field(default_factory=dict)
    """Measurement index -> why its JPEG cannot be stored (`check_jpeg`)."""


@dataclasses.dataclass
class _Buffers:
    """What the first pass over one file keeps, per configured topic."""

    images: dict[str, _Images]
    joints: dict[str, _Joints]
    texts: list[str] = dataclasses.field(default_factory=list)
    decoders: dict[int, Callable[[bytes], Any]] = dataclasses.field(default_factory=dict)
    """Channel id -> CDR decoder, for the image channels (for a frame whose bytes were not found in its message)."""
    topics: dict[str, str] = dataclasses.field(default_factory=dict)
    """Every topic of the file -> its message type: what a configured topic that is absent could be mapped to."""
    camera_infos: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Camera -> its first CameraInfo's fields (what `calibration.ros_calibration` reads)."""
    frames: FrameTree = dataclasses.field(default_factory=FrameTree)
    """The static transforms read from the tf topic."""


class TeleopMcapSource(TeleopSource):
    """Bimanual teleop episodes from ROS 2 MCAP logs, one file per episode."""

    name = "teleop-mcap"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(TeleopConfig):
        cameras: Mapping[str, str] = dataclasses.field(default_factory=mcap_cameras, hash=False)
        """CompressedImage topic -> canonical camera name (exterior_1, left_wrist, right_wrist, ...)."""
        state_topics: tuple[str, ...] = STATE_TOPICS
        """JointState topics of the follower arms, concatenated in this order into the state (left, then right)."""
        action_topics: tuple[str, ...] = ACTION_TOPICS
        """JointState topics of the leader arms, concatenated in this order into the action."""
        joint_names: tuple[str, ...] = ARM_JOINTS
        """The joints taken from each JointState message, by name, in this order (6 joints, then the gripper)."""
        instruction_topic: str | None = INSTRUCTION_TOPIC
        """A std_msgs/msg/String topic whose texts are the instructions; None: no instructions."""
        timestamps: str = "header"
        """"header": header.stamp, falling back to the log time where the stamp is zero; "log_time": log times."""
        keep_velocity: bool = True
        """Keep the followers' joint velocities as the `qvel` extra [n, 14] (every follower message must carry
        them; pass false for drivers that leave `velocity` empty)."""
        camera_info_topics: Mapping[str, str] | None = dataclasses.field(default=None, hash=False)
        """CameraInfo topic -> canonical camera; None: `<namespace of each camera's image topic>/camera_info`."""
        tf_static_topic: str | None = "/tf_static"
        """The topic of static transforms (tf2_msgs/msg/TFMessage); None: no extrinsics are read."""
        base_frame: str = "base_link"
        """The robot base frame calibrations are expressed in (its trajectories' poses are in it)."""

        def __post_init__(self) -> None:
            for field in ("state_topics", "action_topics", "joint_names"):
                object.__setattr__(self, field, tuple(getattr(self, field)))
            object.__setattr__(self, "cameras", check_cameras(type(self).__qualname__, self.cameras))
            super().__post_init__()
            _validate(self)

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._decoders = DecoderFactory()

    @property
    def dataset_name(self) -> str:
        return self.config.dataset_name or safe_key_part(self.root.resolve().name)

    def plan(self) -> list[WorkUnit]:
        """Units of `files_per_unit` MCAP files in sorted path order."""
        if not self.root.is_dir():
            raise SourceError(f"{self.root} is not a directory; point --input at a directory of .mcap files")
        files = sorted(path.relative_to(self.root).as_posix() for path in self.root.rglob("*.mcap"))
        if not files:
            raise SourceError(f"{self.root} holds no .mcap files; point --input at the recordings' directory")
        step = self.config.files_per_unit
        return [WorkUnit(i, tuple(files[start : start + step])) for i, start in enumerate(range(0, len(files), step))]

    def read(self, unit: WorkUnit, ledger: DropLedger) -> Iterator:
        """Each file's episodes (one, or one per segment when split at gaps), in file order. Their frames are read
        from the file, held open, while they are built into samples; it is closed once the consumer asks for the
        next file's episodes (a frame read after that opens and closes the file for that read)."""
        for file in unit.files:
            messages = McapMessages(self.root / file)
            try:
                yield from self._file_episodes(file, messages, ledger)
            finally:
                messages.release()

    def _file_episodes(self, file: str, messages: McapMessages, ledger: DropLedger) -> list:
        """The file's episodes, their frames read through `messages` on access."""
        episode_id = f"{self.dataset_name}-{safe_key_part(file.removesuffix('.mcap'))}"
        try:
            return self.assembler.episodes(self._recording(file, episode_id, messages), ledger)
        except _FileProblem as problem:
            ledger.quarantine(file=file, episode=episode_id, reason=problem.reason, message=str(problem))
        except MissingStreamError as error:
            self.assembler.reject(error, file, episode_id, ledger)
        return []


    # Reading --------------------------------------------------------------------------------------------------

    def _recording(self, file: str, episode_id: str, messages: McapMessages) -> Recording:
        config = self.config
        buffers = _Buffers(images={topic: _Images() for topic in config.cameras},
                           joints={topic: _Joints() for topic in (*config.state_topics, *config.action_topics)})
        header = self._stream(file, buffers)
        images, joints, width = buffers.images, buffers.joints, len(config.joint_names)
        for topic, stream in [*images.items(), *joints.items()]:
            if not stream.stamps:
                raise MissingStreamError(f"{file}: topic {topic} has no messages (the file has none of it, or the "
                                         f"recorder did not subscribe to it)", origin=file, stream=topic,
                                         fix=self._topic_fix(topic, buffers.topics))
        calibration, uncalibrated = self._calibration(file, buffers)
        return Recording(
            file=file,
            episode_id=episode_id,
            source_version=f"mcap {header.profile or '-'} ({header.library})",
            cameras={camera: self._frame_stream(file, topic, images[topic], messages, buffers.decoders)
                     for topic, camera in config.cameras.items()},
            state=[_vectors(topic, f"state.{arm}", joints[topic], width)
                   for topic, arm in zip(config.state_topics, ARMS)],
            action=[_vectors(topic, f"action.{arm}", joints[topic], width)
                    for topic, arm in zip(config.action_topics, ARMS)],
            extras=self._velocities(joints) if config.keep_velocity else [],
            instructions=list(dict.fromkeys(text for text in buffers.texts if text)),
            calibration=calibration,
            flags={"calibration_missing": uncalibrated} if uncalibrated else {},
        )

    def _stream(self, file: str, buffers: _Buffers) -> Header:
        """Read the file once, front to back, filling the per-topic buffers; returns its Header record."""
        header, schemas, channels, index = None, {}, {}, 0
        try:
            with open(self.root / file, "rb") as handle:
                for record, location in located_records(handle):
                    if isinstance(record, Header):
                        header = record
                    elif isinstance(record, Schema):
                        schemas[record.id] = record
                    elif isinstance(record, Channel):
                        channels[record.id] = record
                        schema = schemas.get(record.schema_id)
                        buffers.topics[record.topic] = schema.name if schema else record.message_encoding
                    elif isinstance(record, Message):
                        channel = channels.get(record.channel_id)
                        if channel is not None and channel.topic in self._calibration_topics:
                            self._calibration_message(file, index, record, channel, schemas, buffers)
                        elif channel is not None and self._wanted(channel.topic):
                            self._take(file, index, record, location, channel, schemas, buffers)
                        index += 1
        except (EndOfFile, struct.error) as error:
            raise _FileProblem(DropReason.TRUNCATED_FILE, f"{file}: ends abruptly after {index} messages "
                               f"({type(error).__name__}); the recording was cut off. Fix: {_REPAIR}") from error
        except CRCValidationError as error:
            raise _FileProblem(DropReason.CRC_MISMATCH, f"{file}: a checksum does not match after {index} messages "
                               f"({error}); the file is damaged. Fix: {_REPAIR}") from error
        except (McapError, zstandard.ZstdError, ValueError, OSError) as error:
            raise _FileProblem(DropReason.UNREADABLE_FILE, f"{file}: unreadable after {index} messages ({error}). "
                               f"Fix: {_REPAIR}") from error
        if header is None:
            raise _FileProblem(DropReason.UNREADABLE_FILE, f"{file}: no MCAP header record. Fix: {_REPAIR}")
        return header

    def _topic_fix(self, topic: str, topics: dict[str, str]) -> str:
        """The file's topics of the absent `topic`'s message type, and the `--set` line that maps them."""
        config = self.config
        field, configured, kind = (("cameras", config.cameras, COMPRESSED_IMAGE) if topic in config.cameras else
                                   ("state_topics", config.state_topics, JOINT_STATE) if topic in config.state_topics
                                   else ("action_topics", config.action_topics, JOINT_STATE))
        if kind == JOINT_STATE:  # state and action topics share the type: offer each field the ones the other lacks
            other = config.action_topics if field == "state_topics" else config.state_topics
            available = [t for t, name in topics.items() if name == kind and t not in other]
        else:
            available = [t for t, name in topics.items() if name == kind]
        return remap_fix(field, configured, sorted(available), kind)

    def _wanted(self, topic: str) -> bool:
        config = self.config
        return topic in config.cameras or topic in config.state_topics or topic in config.action_topics or (
            topic == config.instruction_topic) or topic in self._calibration_topics

    @functools.cached_property
    def _calibration_topics(self) -> dict[str, str]:
        """Topic -> the camera whose CameraInfo it carries, or "" for the tf topic."""
        config = self.config
        infos = dict(config.camera_info_topics) if config.camera_info_topics is not None else {
            camera_info_topic(topic): camera for topic, camera in config.cameras.items()}
        return {**infos, **({config.tf_static_topic: ""} if config.tf_static_topic else {})}

    def _calibration_message(self, file: str, index: int, record: Message, channel: Channel,
                             schemas: dict[int, Schema], buffers: _Buffers) -> None:
        """Keep a camera's first CameraInfo, or every static transform; a message of another type is ignored
        (calibration is kept where the log has it, never required)."""
        camera = self._calibration_topics[channel.topic]
        schema = schemas.get(channel.schema_id)
        expected = TF_MESSAGE if camera == "" else CAMERA_INFO
        if schema is None or schema.name != expected or channel.message_encoding != "cdr" or (
                camera and camera in buffers.camera_infos):
            return
        try:
            message = self._decoders.decoder_for(channel.message_encoding, schema)(record.data)
        except (McapError, ValueError, IndexError, struct.error, UnicodeDecodeError) as error:
            raise _FileProblem(DropReason.BAD_RECORD, f"{file}: message {index} (of the file) on {channel.topic} "
                               f"does not decode as {expected} ({type(error).__name__}: {error}). Fix: {_REPAIR}")
        if camera:
            buffers.camera_infos[camera] = {
                "width": int(message.width), "height": int(message.height), "k": [float(v) for v in message.k],
                "distortion_model": str(message.distortion_model), "d": [float(v) for v in message.d],
                "frame_id": str(message.header.frame_id)}
            return
        for transform in message.transforms:
            t, r = transform.transform.translation, transform.transform.rotation
            buffers.frames.add(str(transform.header.frame_id), str(transform.child_frame_id), (t.x, t.y, t.z),
                               (r.x, r.y, r.z, r.w))

    def _calibration(self, file: str, buffers: _Buffers) -> tuple[dict[str, dict], dict[str, str]]:
        """(camera -> calibration entry, camera -> why it has none) for the file's cameras."""
        source = f"mcap:{file} (CameraInfo, {self.config.tf_static_topic or 'no tf'} to {self.config.base_frame})"
        entries, missing = ros_calibration(buffers.camera_infos, buffers.frames, self.config.base_frame, source)
        for camera in self.config.cameras.values():
            if camera not in entries and camera not in missing:
                missing[camera] = "no CameraInfo message"
        return entries, missing

    def _take(self, file: str, index: int, record: Message, location: MessageLocation, channel: Channel,
              schemas: dict[int, Schema], buffers: _Buffers) -> None:
        """Decode one message of a wanted topic into its buffer."""
        topic, images, joints = channel.topic, buffers.images, buffers.joints
        expected = COMPRESSED_IMAGE if topic in images else JOINT_STATE if topic in joints else STRING
        schema = schemas.get(channel.schema_id)
        if schema is None or schema.name != expected or channel.message_encoding != "cdr":
            found = f"{schema.name if schema else 'no schema'} in {channel.message_encoding!r} encoding"
            raise _FileProblem(DropReason.BAD_RECORD, f"{file}: topic {topic} carries {found}, but vlaforge reads "
                               f"{expected} (cdr) from it. Fix: map the topic that carries {expected}")
        try:
            decoder = self._decoders.decoder_for(channel.message_encoding, schema)
            message = decoder(record.data)
        except (McapError, ValueError, IndexError, struct.error, UnicodeDecodeError) as error:
            raise _FileProblem(DropReason.BAD_RECORD,
                               f"{file}: message {index} (of the file) on {topic} does not decode as "
                               f"{expected} ({type(error).__name__}: {error}). Fix: {_REPAIR}") from error
        if expected == STRING:
            buffers.texts.append(str(message.data).strip())
            return
        stamp = self._stamp(message, record)
        if expected == COMPRESSED_IMAGE:
            buffers.decoders[channel.id] = decoder
            self._image(images[topic], stamp, location, record.data, bytes(message.data))
        else:
            self._joint_values(file, index, topic, message, stamp, joints[topic])

    def _image(self, images: _Images, stamp: int, location: MessageLocation, cdr: bytes, jpeg: bytes) -> None:
        """Keep the image's stamp, where it is, and whether it can be stored; not its bytes."""
        try:
            check_jpeg(jpeg, self.config.frames)
        except ValueError as error:  # BadImageError
            images.bad[len(images.stamps)] = error
        images.stamps.append(stamp)
        images.offsets.append(location.offset)
        images.ordinals.append(location.ordinal)
        images.starts.append(field_offset(cdr, jpeg))
        images.lengths.append(len(jpeg))

    def _stamp(self, message: Any, record: Message) -> int:
        if self.config.timestamps == "header":
            stamp = message.header.stamp
            nanoseconds = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
            if nanoseconds:
                return nanoseconds
        return int(record.log_time)

    def _joint_values(self, file: str, index: int, topic: str, message: Any, stamp: int, joints: _Joints) -> None:
        names = tuple(message.name)
        columns = joints.columns.get(names)
        if columns is None:
            columns = joints.columns[names] = self._columns(file, index, topic, names, len(message.position))
        position = list(message.position)
        velocity = list(message.velocity)
        width = max(columns) + 1
        if len(position) < width:
            raise _FileProblem(DropReason.BAD_RECORD,
                               f"{file}: message {index} (of the file) on {topic} has {len(position)} "
                               f"positions for {len(names) or width} joints. Fix: {_REPAIR}")
        joints.stamps.append(stamp)
        joints.position.extend([position[c] for c in columns])
        if self.config.keep_velocity and topic in self.config.state_topics:
            if len(velocity) < width:
                raise _FileProblem(DropReason.BAD_RECORD,
                                   f"{file}: message {index} (of the file) on {topic} carries no velocity "
                                   f"for its joints. Fix: pass --set keep_velocity=false")
            joints.velocity.extend([velocity[c] for c in columns])

    def _columns(self, file: str, index: int, topic: str, names: tuple[str, ...], positions: int) -> list[int]:
        """Where each configured joint sits in a message with these names (positionally when it has none)."""
        wanted = self.config.joint_names
        if not names:
            if positions < len(wanted):
                raise _FileProblem(DropReason.BAD_RECORD,
                                   f"{file}: message {index} (of the file) on {topic} has no joint names "
                                   f"and {positions} positions, fewer than joint_names ({len(wanted)})")
            return list(range(len(wanted)))
        missing = [name for name in wanted if name not in names]
        if missing:
            raise _FileProblem(DropReason.BAD_RECORD,
                               f"{file}: message {index} (of the file) on {topic} names joints "
                               f"{list(names)}, without {missing}. Fix: set joint_names to the names this robot "
                               f"publishes (--set 'joint_names=[...]')")
        return [names.index(name) for name in wanted]

    def _frame_stream(self, file: str, topic: str, images: _Images, messages: McapMessages,
                      decoders: dict[int, Callable[[bytes], Any]]) -> FrameStream:
        config, bad = self.config.frames, images.bad
        offsets, ordinals, starts, lengths = (np.frombuffer(column, np.int64) for column in (
            images.offsets, images.ordinals, images.starts, images.lengths))

        def check(indices: np.ndarray) -> None:
            chosen_bad = sorted(bad.keys() & set(indices.tolist()))
            if chosen_bad:
                raise FrameError(chosen_bad[0], bad[chosen_bad[0]])

        def read(index: int) -> bytes:
            try:
                message = messages.message(MessageLocation(int(offsets[index]), int(ordinals[index])))
                start = int(starts[index])
                if start < 0:
                    jpeg = bytes(decoders[message.channel_id](message.data).data)
                else:
                    jpeg = message.data[start : start + int(lengths[index])]
                return stored_jpeg(jpeg, config)
            except (McapError, EndOfFile, OSError, KeyError, ValueError, struct.error, zstandard.ZstdError) as error:
                raise FrameReadError(file, topic, index, error) from error

        return FrameStream(topic, np.frombuffer(images.stamps, np.int64), check, read)

    def _velocities(self, joints: dict[str, _Joints]) -> list[VectorStream]:
        """The followers' velocities as one extra per arm; `_concat` joins them into qvel [n, 14]."""
        width = len(self.config.joint_names)
        return [VectorStream(topic, "extra.qvel", np.frombuffer(joints[topic].stamps, np.int64),
                             np.frombuffer(joints[topic].velocity, np.float64).reshape(-1, width))
                for topic in self.config.state_topics]


def _vectors(topic: str, role: str, joints: _Joints, width: int) -> VectorStream:
    return VectorStream(topic, role, np.frombuffer(joints.stamps, np.int64),
                        np.frombuffer(joints.position, np.float64).reshape(-1, width))


def camera_info_topic(image_topic: str) -> str:
    """Where a ROS camera driver publishes the CameraInfo of an image topic: `camera_info` in the image's namespace
    (`/cam_high/image_raw/compressed` -> `/cam_high/camera_info`)."""
    topic = image_topic.removesuffix("/compressed")
    return f"{topic.rsplit('/', 1)[0]}/camera_info"


def _validate(config: TeleopMcapSource.Config) -> None:
    name = "TeleopMcapSource.Config"
    for field in ("state_topics", "action_topics"):
        topics = getattr(config, field)
        if len(topics) != len(ARMS) or not all(isinstance(t, str) and t.startswith("/") for t in topics):
            raise ValueError(f"{name}.{field} must be {len(ARMS)} topics (left arm, then right arm) starting with "
                             f"'/', got {topics!r}")
    topics = [*config.cameras, *config.state_topics, *config.action_topics]
    if len(set(topics)) != len(topics):
        raise ValueError(f"{name}: a topic is used twice among cameras, state_topics and action_topics: {topics}")
    if len(config.joint_names) != len(ARM_JOINTS) or len(set(config.joint_names)) != len(config.joint_names):
        raise ValueError(f"{name}.joint_names must be {len(ARM_JOINTS)} distinct names (6 joints, then the gripper), "
                         f"got {config.joint_names!r}")
    if config.timestamps not in TIMESTAMP_SOURCES:
        raise ValueError(f"{name}.timestamps must be one of {list(TIMESTAMP_SOURCES)}, got {config.timestamps!r}")
    if config.instruction_topic is not None and not isinstance(config.instruction_topic, str):
        raise ValueError(f"{name}.instruction_topic must be a topic or None, got {config.instruction_topic!r}")
    if not isinstance(config.keep_velocity, bool):
        raise ValueError(f"{name}.keep_velocity must be true or false, got {config.keep_velocity!r}")
