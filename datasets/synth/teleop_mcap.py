"""Bimanual teleop recordings as ROS 2 writes them into MCAP: one file per episode, CDR messages, ros2msg schemas.

Each schema is registered the way rosbag2 does it (encoding `ros2msg`, name `pkg/msg/Type`): the type's own
definition, then each dependency after a line of 80 `=` and a `MSG: pkg/Type` line. The definitions below are the
ROS 2 ones field for field (their comments left out). Channels use `message_encoding: cdr`; the file has the `ros2`
profile, zstd-compressed chunks, chunk indexes and a summary, as `mcap_ros2.writer.Writer` writes them.

Topics are the documented defaults of `datasets/bimanual.py`. Messages are written in log-time order, each
`CompressedImage` with format "jpeg"; the instruction is one `std_msgs/msg/String` message at the start.

With `camera_info` (the default), each camera driver also publishes a `sensor_msgs/msg/CameraInfo` beside every
image, on `/<camera>/camera_info` (the image topic's namespace, as ROS camera drivers do), in the camera's optical
frame; and the recorder holds one `tf2_msgs/msg/TFMessage` on `/tf_static` at the start, placing the overhead
camera's mount in `base_link` and its optical frame in the mount (the usual -90 degree turns). The wrist cameras'
frames hang off the moving grippers (dynamic `/tf`, not recorded here), so no static chain reaches them.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

import simplejpeg
from mcap_ros2.writer import Writer

from vlaforge.datasets.bimanual import ACTION_TOPICS, ARM_JOINTS, ARMS, INSTRUCTION_TOPIC, STATE_TOPICS
from vlaforge.datasets.synth.teleop import TeleopRecording, make_recording
from vlaforge.datasets.timeline import NS_PER_S

TIME_MSG = "int32 sec\nuint32 nanosec\n"
HEADER_MSG = "builtin_interfaces/Time stamp\nstring frame_id\n"
COMPRESSED_IMAGE_MSG = "std_msgs/Header header\nstring format\nuint8[] data\n"
JOINT_STATE_MSG = "std_msgs/Header header\n\nstring[] name\nfloat64[] position\nfloat64[] velocity\nfloat64[] effort\n"
STRING_MSG = "string data\n"
CAMERA_INFO_MSG = ("std_msgs/Header header\n\nuint32 height\nuint32 width\n\nstring distortion_model\n\nfloat64[] d\n"
                   "\nfloat64[9]  k\n\nfloat64[9]  r\n\nfloat64[12] p\n\nuint32 binning_x\nuint32 binning_y\n\n"
                   "RegionOfInterest roi\n")
REGION_MSG = "uint32 x_offset\nuint32 y_offset\nuint32 height\nuint32 width\n\nbool do_rectify\n"
TF_MESSAGE_MSG = "geometry_msgs/TransformStamped[] transforms\n"
TRANSFORM_STAMPED_MSG = "std_msgs/Header header\nstring child_frame_id\nTransform transform\n"
TRANSFORM_MSG = "Vector3 translation\nQuaternion rotation\n"
VECTOR3_MSG = "float64 x\nfloat64 y\nfloat64 z\n"
QUATERNION_MSG = "float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1\n"
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
    "sensor_msgs/msg/CameraInfo": schema_text(CAMERA_INFO_MSG, {
        **_STAMPED, "sensor_msgs/RegionOfInterest": REGION_MSG}),
    "tf2_msgs/msg/TFMessage": schema_text(TF_MESSAGE_MSG, {
        "geometry_msgs/TransformStamped": TRANSFORM_STAMPED_MSG, **_STAMPED, "geometry_msgs/Transform": TRANSFORM_MSG,
        "geometry_msgs/Vector3": VECTOR3_MSG, "geometry_msgs/Quaternion": QUATERNION_MSG}),
}
TF_STATIC = "/tf_static"
OPTICAL_ROTATION = (-0.5, 0.5, -0.5, 0.5)
"""(x, y, z, w) of a camera link -> optical frame (z forward, x right, y down), REP 103's usual turns."""
STATIC_TRANSFORMS = (
    ("base_link", "cam_high_link", (0.45, 0.0, 0.75), (0.0, 0.3826834, 0.0, 0.9238795)),  # 45 degrees pitched down
    ("cam_high_link", "cam_high_optical_frame", (0.0, 0.0, 0.0), OPTICAL_ROTATION),
)
"""(parent, child, translation, rotation xyzw) the recorder's /tf_static holds."""


def camera_info(camera: str, height: int, width: int) -> dict:
    """The CameraInfo a driver publishes for a camera of this image size: a pinhole of focal length 0.8 x width,
    centred, with plumb-bob distortion coefficients."""
    f, cx, cy = 0.8 * width, (width - 1) / 2, (height - 1) / 2
    return {"height": height, "width": width, "distortion_model": "plumb_bob", "d": [0.01, -0.02, 0.0, 0.0, 0.0],
            "k": [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0], "r": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
            "p": [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0], "binning_x": 0, "binning_y": 0,
            "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False}}


def camera_topic(camera: str) -> str:
    """The compressed image topic of an ALOHA camera name: `/cam_high/image_raw/compressed`."""
    return f"/{camera}/image_raw/compressed"


def _header(stamp_ns: int, frame_id: str) -> dict:
    return {"stamp": {"sec": int(stamp_ns) // NS_PER_S, "nanosec": int(stamp_ns) % NS_PER_S}, "frame_id": frame_id}


def _messages(recording: TeleopRecording, joint_names: tuple[str, ...],
              with_camera_info: bool = True) -> list[tuple[int, str, str, dict]]:
    """(log time, topic, schema name, message) of every message, in log-time order."""
    messages = []
    for camera, track in recording.cameras.items():
        height, width = simplejpeg.decode_jpeg_header(track.jpeg[0])[:2]
        info = camera_info(camera, height, width)
        for stamp, log, jpeg in zip(track.stamps, track.log, track.jpeg):
            body = {"header": _header(stamp, f"{camera}_optical_frame"), "format": "jpeg", "data": jpeg}
            messages.append((int(log), camera_topic(camera), "sensor_msgs/msg/CompressedImage", body))
            if with_camera_info:
                messages.append((int(log), f"/{camera}/camera_info", "sensor_msgs/msg/CameraInfo",
                                 {"header": _header(stamp, f"{camera}_optical_frame"), **info}))
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
    if with_camera_info:
        transforms = [{"header": _header(first, parent), "child_frame_id": child,
                       "transform": {"translation": dict(zip("xyz", translation)),
                                     "rotation": dict(zip("xyzw", rotation))}}
                      for parent, child, translation, rotation in STATIC_TRANSFORMS]
        messages.append((first, TF_STATIC, "tf2_msgs/msg/TFMessage", {"transforms": transforms}))
    messages.sort(key=lambda message: (message[0], message[1]))
    return messages


def write_teleop_mcap(path: pathlib.Path, recording: TeleopRecording, *, skip_topics: tuple[str, ...] = (),
                      joint_names: tuple[str, ...] = ARM_JOINTS,
                      renamed_topics: dict[str, str] | None = None, camera_info: bool = True) -> pathlib.Path:
    """Write one recording as an MCAP file; `skip_topics` leaves topics out (a missing camera, say),
    `joint_names` sets the order joints are published in, `renamed_topics` publishes a topic under another
    name, as other drivers name them (`/cam_high/image/compressed`, `/camera/color/image_raw/compressed`), and
    `camera_info` adds CameraInfo topics and /tf_static."""
    path.parent.mkdir(parents=True, exist_ok=True)
    renamed = renamed_topics or {}
    with open(path, "wb") as handle:
        writer = Writer(handle)
        schemas = {name: writer.register_msgdef(name, text) for name, text in SCHEMAS.items()}
        for log, topic, schema, body in _messages(recording, joint_names, camera_info):
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
