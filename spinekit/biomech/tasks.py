"""Static tasks: posture (pelvis + lumbar angles) and hand loads.

A trunk flexion splits between pelvic tilt and lumbar flexion by the lumbopelvic rhythm
(constants.LUMBAR_SHARE_OF_TRUNK_FLEXION, Tafazzol et al. 2014), and the lumbar part over the levels by the
Christophy 2012 coupling ratios (constants.LUMBAR_COUPLING). Lateral bending and axial rotation are lumbar only,
distributed the same way. The thorax (T12 and above) is rigid; T12/L1 takes no share of the motion.

Arms hang from the shoulders (de Leva 1996 masses and lengths) at ``arm_angle_deg`` from the vertical in the sagittal
plane (positive forward, in the ground frame); hand loads act at the hands. Both are applied to the thorax as forces
in the ground frame at the posture-dependent point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from spinekit.biomech import constants as C
from spinekit.errors import InputError

LEVEL_JOINTS = {"L1/L2": "L1_L2", "L2/L3": "L2_L3", "L3/L4": "L3_L4", "L4/L5": "L4_L5", "L5/S1": "L5_S1"}


@dataclass(frozen=True)
class Task:
    """A static posture with hand loads.

    Attributes:
        name: identifier used in the tables.
        trunk_flexion_deg: forward flexion of the thorax relative to the vertical (pelvis + lumbar).
        lumbar_share: fraction of the trunk flexion taken by the lumbar spine.
        lateral_bending_deg: lumbar lateral bending, positive to the right.
        axial_rotation_deg: lumbar-level axial rotation master angle (Christophy coupling), positive to the left.
        left_hand_kg, right_hand_kg: loads held in each hand.
        arm_angle_deg: angle of the (straight) arms from the vertical, positive forward.
        description: what the task represents and its source.
    """

    name: str
    trunk_flexion_deg: float = 0.0
    lumbar_share: float = C.LUMBAR_SHARE_OF_TRUNK_FLEXION
    lateral_bending_deg: float = 0.0
    axial_rotation_deg: float = 0.0
    left_hand_kg: float = 0.0
    right_hand_kg: float = 0.0
    arm_angle_deg: float = 0.0
    description: str = ""

    def coordinates(self) -> dict[str, float]:
        """Coordinate values (rad) of the posture."""
        flex = self.trunk_flexion_deg * C.DEG
        lumbar = flex * self.lumbar_share
        values = {"pelvis_tilt": flex - lumbar, "pelvis_list": 0.0, "pelvis_rotation": 0.0}
        for level, joint in LEVEL_JOINTS.items():
            values[f"{joint}_FE"] = lumbar * C.LUMBAR_COUPLING["flexion"][level]
            values[f"{joint}_LB"] = self.lateral_bending_deg * C.DEG * C.LUMBAR_COUPLING["lateral_bending"][level]
            values[f"{joint}_AR"] = self.axial_rotation_deg * C.DEG * C.LUMBAR_COUPLING["axial_rotation"][level]
        return values

    def validate(self) -> None:
        if not -30 <= self.trunk_flexion_deg <= 110:
            raise InputError(f"task {self.name}: trunk flexion {self.trunk_flexion_deg} deg outside -30..110")
        if not 0 <= self.lumbar_share <= 1:
            raise InputError(f"task {self.name}: lumbar share {self.lumbar_share} outside 0..1")
        if abs(self.lateral_bending_deg) > 45 or abs(self.axial_rotation_deg) > 90:
            raise InputError(f"task {self.name}: lateral bending beyond 45 deg or axial rotation beyond 90 deg")
        if not (0 <= self.left_hand_kg <= 60 and 0 <= self.right_hand_kg <= 60):
            raise InputError(f"task {self.name}: hand loads must be 0-60 kg per hand")
        if not -10 <= self.arm_angle_deg <= 120:
            raise InputError(f"task {self.name}: arm angle {self.arm_angle_deg} deg outside -10..120")


#: Postures for the in-vivo comparison with Wilke 1999 and the seed task of Bruno 2017.
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("standing", description="relaxed upright standing, arms hanging (Wilke 1999: 0.5 MPa)"),
        Task(
            "flexed_standing",
            trunk_flexion_deg=20.0,
            description="standing bent forward 20 deg, no load (Wilke 1999 'standing, bent forward': 1.1 MPa; "
            "angle not given by Wilke, chosen here)",
        ),
        Task(
            "flexion60_5kg",
            trunk_flexion_deg=60.0,
            left_hand_kg=5.0,
            right_hand_kg=5.0,
            description="60 deg trunk flexion holding 5 kg in each hand, arms hanging (Bruno 2017 seed task)",
        ),
        Task(
            "lift20_close",
            trunk_flexion_deg=0.0,
            left_hand_kg=10.0,
            right_hand_kg=10.0,
            arm_angle_deg=12.0,
            description="holding 20 kg close to the body, upright, hands ~0.14 m in front of the shoulders "
            "(load against the abdomen; Wilke 1999: 1.1 MPa)",
        ),
        Task(
            "lift20_roundback",
            trunk_flexion_deg=35.0,
            lumbar_share=C.LUMBAR_SHARE_ROUND_BACK,
            left_hand_kg=10.0,
            right_hand_kg=10.0,
            description="lifting 20 kg with a round (flexed) back, arms hanging (Wilke 1999: 2.3 MPa)",
        ),
        Task(
            "lateral20_5kg",
            lateral_bending_deg=20.0,
            right_hand_kg=5.0,
            description="lateral bending 20 deg to the right holding 5 kg in the right hand",
        ),
    )
}
DEFAULT_TASKS: tuple[str, ...] = tuple(TASKS)


def parse_task(text: str) -> Task:
    """A task by name, or a user-defined one: ``name:flex=30,share=0.67,lat=0,rot=0,left=5,right=5,arm=0``."""
    text = text.strip()
    if ":" not in text:
        if text not in TASKS:
            raise InputError(f"unknown task {text!r}; known: {sorted(TASKS)} or name:flex=..,left=..,right=..")
        return TASKS[text]
    name, spec = text.split(":", 1)
    keys = {
        "flex": "trunk_flexion_deg",
        "share": "lumbar_share",
        "lat": "lateral_bending_deg",
        "rot": "axial_rotation_deg",
        "left": "left_hand_kg",
        "right": "right_hand_kg",
        "arm": "arm_angle_deg",
    }
    values = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, _, raw = item.partition("=")
        if key not in keys:
            raise InputError(f"task {name!r}: unknown key {key!r}; use {sorted(keys)}")
        try:
            values[keys[key]] = float(raw)
        except ValueError:
            raise InputError(f"task {name!r}: {key}={raw!r} is not a number") from None
    task = replace(Task(name.strip() or "custom", description=f"user-defined: {spec}"), **values)
    task.validate()
    return task


def hand_and_arm_points(task: Task, shoulder_ground, arm_com_m: float, arm_length_m: float, tilt=None):
    """Arm centre of mass and hand positions in the ground for one shoulder (numpy arrays, m).

    ``tilt``: rotation (3x3) from the world to a tilted model ground (models whose pelvis is welded to the ground).
    """
    import numpy as np

    a = task.arm_angle_deg * C.DEG
    direction = np.array([math.sin(a), -math.cos(a), 0.0])
    if tilt is not None:
        direction = np.asarray(tilt) @ direction
    return shoulder_ground + direction * arm_com_m, shoulder_ground + direction * arm_length_m
