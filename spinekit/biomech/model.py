"""Build the subject's OpenSim lumbar spine model through the OpenSim API (no template file).

Bodies: pelvis (with sacrum) - L5 - L4 - L3 - L2 - L1 - thorax (T12 and above, head, neck; the arms are applied as
posture-dependent loads, :mod:`spinekit.biomech.tasks`). Each lumbar joint (L5/S1 to L1/L2) is a CustomJoint with three
rotations (flexion about -Z, lateral bending about X, axial rotation about Y) at the centre of the disc, about the
model's upright axes (the axes of the neutral ground, as in Christophy 2012, whose bodies are not rotated): a task's
flexion is sagittal for the body as a whole. Joint axes that followed each vertebra's own frame turned the scan's
per-vertebra axial rotations (up to 8 deg on ct_lumbar_3mm, part anatomy, part estimation noise) into lateral
bending of a "sagittal" flexion (up to 19 N m of lateral moment at 60 deg there), which the muscles then had to hold.

All geometry is expressed in the pelvis frame of the subject (the upright neutral ground): the subject's lumbar
spine keeps its own curvature and is placed with its overall orientation equal to the generic model's (see
:func:`spine_geometry`); the pelvis keeps the generic (Christophy 2012) orientation in that frame.

Body frames: origin at the vertebral body centroid, X along the vertebra's anterior axis, Y along its superior axis
(normal to the endplates), Z to the right. A joint reaction expressed in the child (upper) vertebra's frame therefore
splits into compression (+Y, along the upper vertebra's axis) and anterior-posterior shear (X).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from spinekit.biomech import constants as C
from spinekit.biomech.anatomy import LUMBAR, T12, SubjectAnatomy, dir_lps_to_opensim, generic_vertebrae, lps_to_opensim
from spinekit.biomech.muscles import MuscleSpec, personalised_muscles
from spinekit.errors import InputError

log = logging.getLogger(__name__)

BODY_NAMES = {24: "L5", 23: "L4", 22: "L3", 21: "L2", 20: "L1"}
#: Joints from caudal to cranial: (joint name, parent body, child body).
JOINTS = (
    ("L5_S1", "pelvis", "L5"),
    ("L4_L5", "L5", "L4"),
    ("L3_L4", "L4", "L3"),
    ("L2_L3", "L3", "L2"),
    ("L1_L2", "L2", "L1"),
    ("T12_L1", "L1", "thorax"),
)
#: T12/L1 is welded as in Christophy 2012 (their torso is rigidly fixed to L1): the thoracic muscles of a lumbar model
#: cannot balance a separate T12/L1 joint. Its weld reaction is still reported.
WELDED_JOINT = "T12_L1"
LEVEL_OF_JOINT = {
    "L5_S1": "L5/S1",
    "L4_L5": "L4/L5",
    "L3_L4": "L3/L4",
    "L2_L3": "L2/L3",
    "L1_L2": "L1/L2",
    "T12_L1": "T12/L1",
}
ROTATIONS = (("FE", (0.0, 0.0, -1.0)), ("LB", (1.0, 0.0, 0.0)), ("AR", (0.0, 1.0, 0.0)))
PELVIS_COORDS = (
    ("pelvis_tilt", (0.0, 0.0, -1.0)),
    ("pelvis_list", (1.0, 0.0, 0.0)),
    ("pelvis_rotation", (0.0, 1.0, 0.0)),
)


def quiet_opensim() -> None:
    """Silence OpenSim's console output (errors only)."""
    import opensim as osim

    osim.Logger.setLevelString("error")


@dataclass(frozen=True)
class Frame:
    """Origin (m) and rotation (columns = body X, Y, Z axes in the model's neutral ground frame)."""

    origin: np.ndarray
    rotation: np.ndarray

    def to_local(self, point: np.ndarray) -> np.ndarray:
        return self.rotation.T @ (np.asarray(point, float) - self.origin)

    def to_ground(self, local: np.ndarray) -> np.ndarray:
        return self.origin + self.rotation @ np.asarray(local, float)


@dataclass
class SpineGeometry:
    """Body frames and joint centres in the model's neutral ground frame (pelvis frame, metres)."""

    frames: dict[str, Frame]
    joint_centres: dict[str, np.ndarray]
    scale: float
    level_scale: dict[str, float] = field(default_factory=dict)
    scan_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    scan_origin: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def from_lps(self, points_lps: np.ndarray) -> np.ndarray:
        """Scan LPS mm to the model's neutral ground (pelvis frame, metres)."""
        return (lps_to_opensim(points_lps) - self.scan_origin) @ self.scan_rotation.T


def _frame_from_axes(origin: np.ndarray, superior: np.ndarray, anterior: np.ndarray) -> Frame:
    y = superior / np.linalg.norm(superior)
    x = anterior - np.dot(anterior, y) * y
    x /= np.linalg.norm(x)
    z = np.cross(x, y)
    return Frame(np.asarray(origin, float), np.stack([x, y, z], axis=1))


def _raw_frames(vertebrae: dict) -> dict[int, Frame]:
    return {
        v: _frame_from_axes(
            lps_to_opensim(g.centroid_lps), dir_lps_to_opensim(g.superior), dir_lps_to_opensim(g.anterior)
        )
        for v, g in vertebrae.items()
    }


def lumbar_frame(frames: dict[int, Frame]) -> np.ndarray:
    """Overall orientation of the lumbar spine: Y along the L5 -> L1 body-centroid chord, X the mean anterior axis
    of L1-L5 made orthogonal to it, Z = X x Y (columns, in the frames' coordinates)."""
    y = frames[20].origin - frames[24].origin
    y = y / np.linalg.norm(y)
    x = np.mean([frames[v].rotation[:, 0] for v in LUMBAR], axis=0)
    x = x - np.dot(x, y) * y
    x /= np.linalg.norm(x)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def spine_geometry(vertebrae: dict, sex: str, height_cm: float) -> SpineGeometry:
    """Frames of pelvis, L5-L1 and thorax and the six joint centres, in the subject's pelvis frame.

    Joint centres: midpoint of adjacent body centroids; L5/S1 half an L4-L5 spacing below L5 along its axis; T12/L1
    at the T12-L1 midpoint when T12 is present, else half an L1-L2 spacing above L1.

    Upright reference: a scan is supine (or prone) and shows neither the standing pelvic tilt nor the standing trunk
    inclination, so the subject's lumbar spine is placed with its overall orientation (:func:`lumbar_frame`: the
    L5-L1 centroid chord and the mean anterior axis) equal to the generic model's; its own curvature is kept around
    that chord, the pelvis keeps the generic orientation in the world (generic sacral slope) and the thorax keeps
    the generic relation to L1 (Christophy 2012 weld). Hanging the spine on the L5 axis alone (the first version)
    carried every degree of the subject's lordosis, and every degree of error in one vertebra's axis, into the
    trunk's lean: with a 50 deg L1-L5 curve the thorax leant back 14 deg in "standing", which then needed the
    abdominals to hold it and loaded L4/L5 more than flexed standing. Centroids are the most robust part of the
    scan frames; one vertebra's axis is the least.
    """
    missing = [BODY_NAMES[v] for v in LUMBAR if v not in vertebrae]
    if missing:
        raise InputError(f"lumbar vertebrae {missing} have no geometry; use anatomy_from_labels (it fills them)")
    raw = _raw_frames(vertebrae)
    generic = _raw_frames(generic_vertebrae(sex, height_cm))
    centre = {v: raw[v].origin for v in raw}
    joints = {}
    for lower, upper in ((24, 23), (23, 22), (22, 21), (21, 20)):
        joints[f"{BODY_NAMES[upper]}_{BODY_NAMES[lower]}"] = (centre[lower] + centre[upper]) / 2
    joints["L5_S1"] = centre[24] - raw[24].rotation[:, 1] * np.linalg.norm(centre[23] - centre[24]) / 2
    if T12 in raw:
        joints["T12_L1"] = (centre[T12] + centre[20]) / 2
    else:
        joints["T12_L1"] = centre[20] + raw[20].rotation[:, 1] * np.linalg.norm(centre[20] - centre[21]) / 2
    # Upright orientation: the subject's lumbar frame (chord and mean anterior axis) takes the generic one's place.
    r_pelvis = lumbar_frame(raw) @ lumbar_frame(generic).T
    pelvis = Frame(joints["L5_S1"], r_pelvis)
    r_thorax = raw[20].rotation @ generic[20].rotation.T
    frames = {"pelvis": pelvis, "thorax": Frame(joints["T12_L1"], r_thorax)}
    frames.update({BODY_NAMES[v]: raw[v] for v in LUMBAR})
    # Express everything in the pelvis frame (the upright neutral ground).
    to_p = pelvis.rotation.T
    frames = {n: Frame(to_p @ (f.origin - pelvis.origin), to_p @ f.rotation) for n, f in frames.items()}
    joints = {n: to_p @ (p - pelvis.origin) for n, p in joints.items()}
    scale = height_cm / 100.0 / C.REFERENCE_STATURE_M[sex]
    level_scale = {}
    for v in LUMBAR:
        nb = 23 if v == 24 else v + 1  # L5 pairs with L4, the others with the level below
        measured = np.linalg.norm(centre[v] - centre[nb])
        reference = np.linalg.norm(generic[v].origin - generic[nb].origin)
        level_scale[BODY_NAMES[v]] = float(np.clip(measured / reference, 0.7, 1.4))
    return SpineGeometry(frames, joints, scale, level_scale, to_p, pelvis.origin)


def generic_body_frames(sex: str, height_cm: float) -> dict[str, Frame]:
    """Frames of the generic (Christophy) model in Christophy's sacrum-origin coordinates, scaled to stature."""
    raw = _raw_frames(generic_vertebrae(sex, height_cm))
    origin = lps_to_opensim(np.zeros(3))
    frames = {BODY_NAMES[v]: Frame(raw[v].origin - origin, raw[v].rotation) for v in LUMBAR}
    scale = height_cm / 100.0 / C.REFERENCE_STATURE_M[sex]
    l5s1 = np.asarray(C.CHRISTOPHY_JOINT_CENTRES_M["L5/S1"]) * scale
    l1 = frames["L1"]
    t12l1 = l1.origin + l1.rotation[:, 1] * np.linalg.norm(frames["L1"].origin - frames["L2"].origin) / 2
    frames["pelvis"] = Frame(l5s1, np.eye(3))
    frames["thorax"] = Frame(t12l1, np.eye(3))
    return frames


@dataclass(frozen=True)
class SegmentMasses:
    """Masses (kg) and centres of mass (m, neutral ground) of the modelled segments plus the arms."""

    lumbar: dict[str, float]
    thorax: float
    thorax_com: np.ndarray
    arm: float
    arm_com_from_shoulder_m: float
    arm_length_m: float
    shoulders: dict[str, np.ndarray]


def segment_masses(anatomy: SubjectAnatomy, geometry: SpineGeometry) -> SegmentMasses:
    """De Leva 1996 segment masses split into Pearsall 1996 lumbar slices (constants for sources)."""
    mass = anatomy.weight_kg
    f = C.DE_LEVA_MASS_FRACTION[anatomy.sex]
    lumbar = {n: C.LUMBAR_SLICE_MASS_FRACTION[n] * mass for n in ("L1", "L2", "L3", "L4", "L5")}
    trunk_part = (f["upper_trunk"] + f["middle_trunk"]) * mass - (lumbar["L1"] + lumbar["L2"] + lumbar["L3"])
    head = f["head_neck"] * mass
    s = geometry.scale
    gen = generic_body_frames(anatomy.sex, anatomy.height_cm)
    thorax_gen, thorax_sub = gen["thorax"], geometry.frames["thorax"]

    def map_thorax(point_christophy: np.ndarray) -> np.ndarray:
        return thorax_sub.to_ground(thorax_gen.to_local(np.asarray(point_christophy) * s))

    torso_com = map_thorax(np.asarray(C.CHRISTOPHY_TORSO_COM_M))
    shoulder_r = np.asarray(C.CHRISTOPHY_SHOULDER_M)
    head_com = map_thorax(shoulder_r * np.array([1, 1, 0]) + np.array([0, C.HEAD_COM_ABOVE_SHOULDER_M, 0]))
    com = (trunk_part * torso_com + head * head_com) / (trunk_part + head)
    shoulders = {"right": map_thorax(shoulder_r), "left": map_thorax(shoulder_r * np.array([1, 1, -1]))}
    length = C.DE_LEVA_SEGMENT_LENGTH_M[anatomy.sex]
    cf = C.DE_LEVA_COM_FRACTION[anatomy.sex]
    seg = [("upper_arm", 0.0), ("forearm", length["upper_arm"]), ("hand", length["upper_arm"] + length["forearm"])]
    m_arm = sum(f[n] for n, _ in seg) * mass
    arm_com = sum(f[n] * mass * (start + cf[n] * length[n]) for n, start in seg) / m_arm * s
    arm_length = (length["upper_arm"] + length["forearm"] + cf["hand"] * length["hand"]) * s
    return SegmentMasses(lumbar, trunk_part + head, com, m_arm, arm_com, arm_length, shoulders)


@dataclass
class BuiltModel:
    """An OpenSim model with what the solver needs to know about it."""

    model: object  # opensim.Model
    anatomy: SubjectAnatomy
    geometry: SpineGeometry
    masses: SegmentMasses
    muscles: list[MuscleSpec]
    coordinates: list[str]
    joints: list[str]
    flags: list[str]
    #: (joint, parent body, child body, level) per reported joint; None = the built-in JOINTS.
    joint_table: list[tuple[str, str, str, str]] | None = None
    #: Body that carries the arms and hand loads.
    thorax_body: str = "thorax"
    #: Shoulder centres in the thorax body's frame (m); None = from ``geometry`` and ``masses``.
    shoulders_local: dict[str, np.ndarray] | None = None
    #: Task -> coordinate values (rad) of the model; None = ``Task.coordinates``.
    coordinate_map: object | None = None
    #: Task -> tilt (rad, about +Z) of the model's ground relative to the world, for models whose pelvis is welded
    #: to the ground: gravity and hand loads are rotated instead of the pelvis. None = no tilt.
    ground_tilt: object | None = None
    #: Coordinate -> joint, for the reserve limits; None = the coordinate name without its last "_" part.
    coordinate_joint: dict[str, str] | None = None
    #: Note added to every task result (e.g. "no muscles, reserves carry the load").
    solve_note: str = ""

    def values(self, task) -> dict[str, float]:
        return self.coordinate_map(task) if self.coordinate_map is not None else task.coordinates()

    def tilt(self, task) -> float:
        return float(self.ground_tilt(task)) if self.ground_tilt is not None else 0.0

    def reported_joints(self) -> list[tuple[str, str, str, str]]:
        if self.joint_table is not None:
            return self.joint_table
        return [(j, p, c, LEVEL_OF_JOINT[j]) for j, p, c in JOINTS if j in self.joints]

    def shoulder_local(self, side: str) -> np.ndarray:
        if self.shoulders_local is not None:
            return np.asarray(self.shoulders_local[side], float)
        return self.geometry.frames["thorax"].to_local(self.masses.shoulders[side])


def _vec(v) -> object:
    import opensim as osim

    return osim.Vec3(float(v[0]), float(v[1]), float(v[2]))


def _euler_xyz(rotation: np.ndarray) -> np.ndarray:
    """OpenSim body-fixed X-Y-Z angles of a rotation matrix."""
    return Rotation.from_matrix(rotation).as_euler("XYZ")


def _custom_joint(name, parent, parent_frame: Frame, child, child_frame: Frame, centre, coords, axes):
    import opensim as osim

    st = osim.SpatialTransform()
    for index, (coord, axis) in enumerate(zip(coords, axes, strict=True)):
        ta = st.updTransformAxis(index)
        names = osim.ArrayStr()
        names.append(coord)
        ta.setCoordinateNames(names)
        ta.setAxis(_vec(axis))
        ta.set_function(osim.LinearFunction(1.0, 0.0))
    for index, axis in zip((3, 4, 5), np.eye(3), strict=True):
        st.updTransformAxis(index).setAxis(_vec(axis))
        st.updTransformAxis(index).set_function(osim.Constant(0.0))
    loc_p = parent_frame.to_local(centre)
    loc_c = child_frame.to_local(centre)
    # Joint frame = the model's upright axes (neutral ground) in both bodies: R_p^T in the parent, R_c^T in the child.
    ori_p = _euler_xyz(parent_frame.rotation.T)
    ori_c = _euler_xyz(child_frame.rotation.T)
    return osim.CustomJoint(name, parent, _vec(loc_p), _vec(ori_p), child, _vec(loc_c), _vec(ori_c), st)


def build_model(anatomy: SubjectAnatomy, name: str = "spinekit_lumbar") -> BuiltModel:
    """Build the personalised OpenSim model of ``anatomy`` (see module docstring)."""
    import opensim as osim

    quiet_opensim()
    geometry = spine_geometry(anatomy.vertebrae, anatomy.sex, anatomy.height_cm)
    masses = segment_masses(anatomy, geometry)
    muscles, muscle_flags = personalised_muscles(anatomy, geometry, generic_body_frames(anatomy.sex, anatomy.height_cm))
    model = osim.Model()
    model.setName(name)
    model.setGravity(osim.Vec3(0, -C.GRAVITY, 0))
    bodies = {}
    pelvis_mass = C.DE_LEVA_MASS_FRACTION[anatomy.sex]["lower_trunk"] * anatomy.weight_kg
    pelvis = osim.Body("pelvis", pelvis_mass, osim.Vec3(0, 0, 0), osim.Inertia(0.1, 0.1, 0.1))
    model.addBody(pelvis)
    bodies["pelvis"] = pelvis
    for v in (24, 23, 22, 21, 20):
        n = BODY_NAMES[v]
        m = masses.lumbar[n]
        ratio = m / 1.7  # Christophy 2012 lumbar inertias (kg m²) for ~1.7 kg slices, scaled by mass
        body = osim.Body(
            n,
            m,
            osim.Vec3(C.LUMBAR_SLICE_COM_ANTERIOR_M * geometry.scale, 0, 0),
            osim.Inertia(0.0112 * ratio, 0.0170 * ratio, 0.0055 * ratio),
        )
        model.addBody(body)
        bodies[n] = body
    th_frame = geometry.frames["thorax"]
    k = C.DE_LEVA_TRUNK_GYRATION[anatomy.sex] * 0.3 * anatomy.height_cm / 100.0
    i_th = masses.thorax * k * k
    thorax = osim.Body(
        "thorax", masses.thorax, _vec(th_frame.to_local(masses.thorax_com)), osim.Inertia(i_th, i_th / 2, i_th)
    )
    model.addBody(thorax)
    bodies["thorax"] = thorax
    ground_frame = Frame(np.zeros(3), np.eye(3))
    pelvis_joint = _custom_joint(
        "pelvis_ground",
        model.getGround(),
        ground_frame,
        pelvis,
        geometry.frames["pelvis"],
        np.zeros(3),
        [c for c, _ in PELVIS_COORDS],
        [a for _, a in PELVIS_COORDS],
    )
    model.addJoint(pelvis_joint)
    coordinates = [c for c, _ in PELVIS_COORDS]
    for joint, parent, child in JOINTS:
        if joint == WELDED_JOINT:
            centre = geometry.joint_centres[joint]
            pf, cf = geometry.frames[parent], geometry.frames[child]
            ori_c = _euler_xyz(cf.rotation.T @ pf.rotation)
            model.addJoint(
                osim.WeldJoint(
                    joint,
                    bodies[parent],
                    _vec(pf.to_local(centre)),
                    _vec((0, 0, 0)),
                    bodies[child],
                    _vec(cf.to_local(centre)),
                    _vec(ori_c),
                )
            )
            continue
        coords = [f"{joint}_{r}" for r, _ in ROTATIONS]
        j = _custom_joint(
            joint,
            bodies[parent],
            geometry.frames[parent],
            bodies[child],
            geometry.frames[child],
            geometry.joint_centres[joint],
            coords,
            [a for _, a in ROTATIONS],
        )
        model.addJoint(j)
        coordinates += coords
    for spec in muscles:
        muscle = osim.Thelen2003Muscle(
            spec.name, spec.max_force, spec.optimal_fiber_length, spec.tendon_slack_length, spec.pennation
        )
        for index, (body, point) in enumerate(spec.points):
            local = geometry.frames[body].to_local(point)
            muscle.addNewPathPoint(f"{spec.name}_p{index}", bodies[body], _vec(local))
        model.addForce(muscle)
    for coord in coordinates:
        actuator = osim.CoordinateActuator(coord)
        pelvis_coord = coord.startswith("pelvis")
        actuator.setName(("residual_" if pelvis_coord else "reserve_") + coord)
        actuator.setOptimalForce(C.PELVIS_RESIDUAL_OPTIMAL_MOMENT_NM if pelvis_coord else C.RESERVE_OPTIMAL_MOMENT_NM)
        actuator.setMinControl(-math.inf)
        actuator.setMaxControl(math.inf)
        model.addForce(actuator)
    model.finalizeConnections()
    return BuiltModel(
        model,
        anatomy,
        geometry,
        masses,
        muscles,
        coordinates,
        [j for j, _, _ in JOINTS],
        list(anatomy.flags) + muscle_flags,
    )
