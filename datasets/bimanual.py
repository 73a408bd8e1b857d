"""The in-house bimanual robot: two 6-DoF arms with grippers, one external camera and two wrist cameras.

State and action are 14-D: the left arm's 6 joints and gripper, then the right arm's (the ALOHA order). The joint
names are the ViperX/ALOHA ones. The state is the follower arms' measured joint positions; the action is the
leader arms' joint positions, which the followers are commanded to track. The external camera is stored as the
canonical `exterior_1`, the wrist cameras as `left_wrist` and `right_wrist`.

The default ROS 2 topics (`TeleopMcapSource`) follow the ALOHA naming, with image_transport's compressed topics:

| stream | topic | message |
|---|---|---|
| external camera | `/cam_high/image_raw/compressed` | `sensor_msgs/msg/CompressedImage` |
| left wrist camera | `/cam_left_wrist/image_raw/compressed` | `sensor_msgs/msg/CompressedImage` |
| right wrist camera | `/cam_right_wrist/image_raw/compressed` | `sensor_msgs/msg/CompressedImage` |
| state, left / right | `/follower_left/joint_states`, `/follower_right/joint_states` | `sensor_msgs/msg/JointState` |
| action, left / right | `/leader_left/joint_states`, `/leader_right/joint_states` | `sensor_msgs/msg/JointState` |
| instruction | `/instruction` | `std_msgs/msg/String` |
"""

from __future__ import annotations

from vlaforge.datasets.schema import Camera

EMBODIMENT = "bimanual_2x6dof"
"""The embodiment key the model's per-robot config (padding, normalization) is looked up by."""
ARMS = ("left", "right")
ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
"""One arm's 7 dimensions, in order: 6 joints, then the gripper."""
DIMENSION_NAMES = [f"{arm}_{joint}" for arm in ARMS for joint in ARM_JOINTS]
"""The 14 names of state and action dimensions: left_waist .. left_gripper, right_waist .. right_gripper."""


def mcap_cameras() -> dict[str, str]:
    """Default camera topics -> canonical camera names."""
    return {
        "/cam_high/image_raw/compressed": Camera.EXTERIOR_1.value,
        "/cam_left_wrist/image_raw/compressed": Camera.LEFT_WRIST.value,
        "/cam_right_wrist/image_raw/compressed": Camera.RIGHT_WRIST.value,
    }


STATE_TOPICS = ("/follower_left/joint_states", "/follower_right/joint_states")
ACTION_TOPICS = ("/leader_left/joint_states", "/leader_right/joint_states")
INSTRUCTION_TOPIC = "/instruction"


def hdf5_cameras() -> dict[str, str]:
    """Default ALOHA camera names (`/observations/images/<name>`) -> canonical camera names. `cam_low`, when a
    file has it, is not read unless mapped (for example to `exterior_2`)."""
    return {
        "cam_high": Camera.EXTERIOR_1.value,
        "cam_left_wrist": Camera.LEFT_WRIST.value,
        "cam_right_wrist": Camera.RIGHT_WRIST.value,
    }
