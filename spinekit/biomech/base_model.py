"""A user's own OpenSim spine model (``--base-model MODEL.osim``) personalised and solved like the built-in one.

The user's bodies, joints and coordinates are found through a name map (:data:`DEFAULT_NAME_MAP`, the naming of the
Christophy 2012 lumbar model and of models derived from it, such as Bruno 2015's thoracolumbar model and the
kinematic passenger model; pass a JSON file of the same shape to override any entry). What is personalised:

- Size: every mapped body is scaled (OpenSim ``Model.scale``: joint offsets, muscle points and inertia scale with
  the body) by the stature ratio height / :data:`constants.REFERENCE_STATURE_M`; each lumbar body additionally by its
  measured inter-centroid spacing over the generic one (``SpineGeometry.level_scale``), so joint spacing follows the
  subject's vertebral centroids. The model's own curvature is kept (flagged).
- Masses: mapped lumbar bodies and the thorax get the de Leva 1996 / Pearsall 1996 masses of the built-in model
  (:func:`spinekit.biomech.model.segment_masses`), at the model's own centres of mass; arms are applied as loads.
- Muscles: where the model has none and the bodies map, the built-in Christophy 2012 fascicle set is added onto
  the user's skeleton (points from :data:`constants.CHRISTOPHY_FASCICLES`, expressed in the user's sacrum frame,
  which is the frame they were read in), with the subject's muscle forces; lines of action stay generic (flagged).
  Without mappable bodies no muscles are added and every task is reported "no muscles, reserves carry the load".
- Kinematics: the task's lumbar flexion, lateral bending and axial rotation drive the model's master coordinates
  (Christophy's ``flex_extension`` is positive in extension, so it gets minus the lumbar flexion); coupled levels
  follow the model's own constraints (assembled by OpenSim). A pelvis welded to the ground is tilted by rotating
  gravity and the hand loads (:mod:`spinekit.biomech.solve`).

Joint reactions are reported in each mapped intervertebral joint's child body frame: compression along that body's
Y axis, which in Christophy-type models is the neutral vertical, not the endplate normal (flagged).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from spinekit.biomech import constants as C
from spinekit.biomech.anatomy import SubjectAnatomy
from spinekit.errors import InputError

log = logging.getLogger(__name__)

#: Our names -> the user's model names. Bodies: pelvis (muscle origins), sacrum (the frame of the Christophy
#: coordinates), L5..L1, thorax. Joints: our level -> intervertebral joint. Coordinates: lumbar master coordinates
#: with the sign that turns our convention (flexion, right bending, left rotation positive) into the model's.
DEFAULT_NAME_MAP: dict[str, dict] = {
    "bodies": {
        "pelvis": "pelvis",
        "sacrum": "sacrum",
        "L5": "lumbar5",
        "L4": "lumbar4",
        "L3": "lumbar3",
        "L2": "lumbar2",
        "L1": "lumbar1",
        "thorax": "torso",
    },
    "joints": {
        "L5/S1": "L5_S1_IVDjnt",
        "L4/L5": "L4_L5_IVDjnt",
        "L3/L4": "L3_L4_IVDjnt",
        "L2/L3": "L2_L3_IVDjnt",
        "L1/L2": "L1_L2_IVDjnt",
        "T12/L1": "T12_L1_IVDjnt",
    },
    "coordinates": {
        "lumbar_flexion": ["flex_extension", -1.0],
        "lumbar_lateral_bending": ["lat_bending", 1.0],
        "lumbar_axial_rotation": ["axial_rotation", 1.0],
    },
}
#: Optimal moments (N m) of the actuators added to the user's independent coordinates (as the built-in model).
NO_MUSCLES_NOTE = "no muscles, reserves carry the load"


def read_name_map(path: str | os.PathLike | None) -> dict[str, dict]:
    """DEFAULT_NAME_MAP updated with a JSON file of the same shape (only the entries it gives change)."""
    merged = {k: dict(v) for k, v in DEFAULT_NAME_MAP.items()}
    if path is None:
        return merged
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the name map {path}: {exc}") from None
    unknown = set(data) - set(merged)
    if unknown:
        raise InputError(f"name map {path}: unknown sections {sorted(unknown)}; use {sorted(merged)}")
    for section, entries in data.items():
        merged[section].update(entries)
    return merged


def _scale_factors(model, anatomy: SubjectAnatomy, geometry, bodies: dict[str, str]) -> dict[str, float]:
    scale = anatomy.height_cm / 100.0 / C.REFERENCE_STATURE_M[anatomy.sex]
    factors = {}
    for i in range(model.getBodySet().getSize()):
        name = model.getBodySet().get(i).getName()
        factors[name] = scale
    for ours, theirs in bodies.items():
        if theirs in factors and ours in geometry.level_scale:
            factors[theirs] = scale * geometry.level_scale[ours]
    return factors


def _apply_scale(model, factors: dict[str, float]) -> None:
    import opensim as osim

    state = model.initSystem()
    scale_set = osim.ScaleSet()
    for body, factor in factors.items():
        item = osim.Scale()
        item.setSegmentName(body)
        item.setScaleFactors(osim.Vec3(factor, factor, factor))
        item.setApply(True)
        scale_set.cloneAndAppend(item)
    model.scale(state, scale_set, True, -1.0)


def _add_muscles(model, specs_by_name: dict[str, float], bodies: dict[str, str], scale: float) -> int:
    """Christophy fascicles (both sides) attached to the user's bodies; returns how many were added."""
    import opensim as osim

    state = model.initSystem()
    body_set = model.getBodySet()
    sacrum = body_set.get(bodies["sacrum"])
    planned = []  # every point first: adding a force invalidates the system
    for name, _group, _force, lopt, lslack, pen, points, _merged in C.CHRISTOPHY_FASCICLES:
        for side, mirror in (("r", 1.0), ("l", -1.0)):
            placed = []
            for body, x, y, z in points:
                target = body_set.get(bodies[body])
                v = sacrum.findStationLocationInAnotherFrame(state, osim.Vec3(x, y, z * mirror), target)
                placed.append((target, osim.Vec3(v.get(0), v.get(1), v.get(2))))
            planned.append((f"{name}_{side}", lopt, lslack, pen, placed))
    added = 0
    for full, lopt, lslack, pen, placed in planned:
        muscle = osim.Thelen2003Muscle(full, specs_by_name[full], lopt * scale, lslack * scale, pen)
        for index, (target, local) in enumerate(placed):
            muscle.addNewPathPoint(f"{full}_p{index}", target, local)
        model.addForce(muscle)
        added += 1
    return added


def load_base_model(path: str | os.PathLike, anatomy: SubjectAnatomy, name_map: dict | None = None):
    """The user's model personalised to ``anatomy`` (module docstring); returns a :class:`BuiltModel`."""
    import opensim as osim

    from spinekit.biomech.model import (
        BuiltModel,
        generic_body_frames,
        quiet_opensim,
        segment_masses,
        spine_geometry,
    )
    from spinekit.biomech.muscles import personalised_muscles

    quiet_opensim()
    name_map = name_map or read_name_map(None)
    path = Path(path)
    if not path.exists():
        raise InputError(f"base model {path} does not exist")
    try:
        model = osim.Model(str(path))
    except RuntimeError as exc:
        raise InputError(f"OpenSim cannot read {path}: {str(exc).strip().splitlines()[-1]}") from None
    model.setName(f"{model.getName()}_spinekit")
    body_names = {model.getBodySet().get(i).getName() for i in range(model.getBodySet().getSize())}
    joint_names = {model.getJointSet().get(i).getName() for i in range(model.getJointSet().getSize())}
    bodies = {ours: theirs for ours, theirs in name_map["bodies"].items() if theirs in body_names}
    flags = [f"base model {path.name}: bodies mapped {bodies}"]
    joints = []
    for level, joint in name_map["joints"].items():
        if joint not in joint_names:
            continue
        j = model.getJointSet().get(joint)
        parent = j.getParentFrame().findBaseFrame().getName()
        child = j.getChildFrame().findBaseFrame().getName()
        joints.append((joint, parent, child, level))
    if not joints:
        raise InputError(
            f"none of the intervertebral joints {sorted(name_map['joints'].values())} is in {path.name} "
            f"(its joints: {sorted(joint_names)}); pass a name map JSON (--name-map) with a 'joints' section"
        )
    if "thorax" not in bodies:
        raise InputError(f"the thorax body {name_map['bodies']['thorax']!r} is not in {path.name}; map it (--name-map)")
    geometry = spine_geometry(anatomy.vertebrae, anatomy.sex, anatomy.height_cm)
    masses = segment_masses(anatomy, geometry)
    scale = anatomy.height_cm / 100.0 / C.REFERENCE_STATURE_M[anatomy.sex]
    has_muscles = model.getMuscles().getSize() > 0
    note = ""
    specs = []
    needed = {"pelvis", "sacrum", "L5", "L4", "L3", "L2", "L1", "thorax"}
    if not has_muscles and needed <= set(bodies):
        specs, muscle_flags = personalised_muscles(
            anatomy, geometry, generic_body_frames(anatomy.sex, anatomy.height_cm)
        )
        flags += muscle_flags
        added = _add_muscles(model, {s.name: s.max_force for s in specs}, bodies, 1.0)
        flags.append(
            f"{added} Christophy 2012 fascicles added onto the base model's skeleton with the subject's forces; "
            "their lines of action are generic"
        )
    elif not has_muscles:
        note = NO_MUSCLES_NOTE
        flags.append(f"base model has no muscles and bodies {sorted(needed - set(bodies))} do not map: {note}")
    else:
        flags.append("base model muscles used as they are (forces not personalised)")
    _apply_scale(model, _scale_factors(model, anatomy, geometry, bodies))
    state = model.initSystem()
    for ours, mass in masses.lumbar.items():
        if ours in bodies:
            model.getBodySet().get(bodies[ours]).setMass(mass)
    model.getBodySet().get(bodies["thorax"]).setMass(masses.thorax)
    coordinate_set = model.getCoordinateSet()
    independent = [
        coordinate_set.get(i).getName()
        for i in range(coordinate_set.getSize())
        if not coordinate_set.get(i).isDependent(state) and not coordinate_set.get(i).get_locked()
    ]
    lumbar_joints = {j for j, _p, _c, _lv in joints}
    coordinate_joint = {}
    for name in independent:
        joint = coordinate_set.get(name).getJoint().getName()
        actuator = osim.CoordinateActuator(name)
        reserve = joint in lumbar_joints
        actuator.setName(("reserve_" if reserve else "residual_") + name)
        actuator.setOptimalForce(C.RESERVE_OPTIMAL_MOMENT_NM if reserve else C.PELVIS_RESIDUAL_OPTIMAL_MOMENT_NM)
        actuator.setMinControl(-math.inf)
        actuator.setMaxControl(math.inf)
        model.addForce(actuator)
        if reserve:
            coordinate_joint[name] = joint
    model.finalizeConnections()
    master = {key: value for key, value in name_map["coordinates"].items() if value[0] in independent}
    flags.append(
        "base model: its own lumbar curvature and coupling kept; compression along each child body's Y axis "
        "(the model's neutral vertical, not the endplate normal)"
    )
    all_coords = [coordinate_set.get(i).getName() for i in range(coordinate_set.getSize())]
    shoulders = _shoulders_local(model, bodies, scale)
    pelvis_welded = not any(c.startswith("pelvis") for c in independent)

    def coordinate_map(task) -> dict[str, float]:
        import opensim as osim

        values = task.coordinates()
        totals = {
            "lumbar_flexion": sum(v for k, v in values.items() if k.endswith("_FE")),
            "lumbar_lateral_bending": sum(v for k, v in values.items() if k.endswith("_LB")),
            "lumbar_axial_rotation": task.axial_rotation_deg * C.DEG,
        }
        work = osim.Model(model)
        s = work.initSystem()
        coords = work.getCoordinateSet()
        for key, (name, sign) in master.items():
            coords.get(name).setValue(s, float(sign) * totals[key], False)
        work.assemble(s)
        return {c: coords.get(c).getValue(s) for c in all_coords}

    def ground_tilt(task) -> float:
        return task.coordinates()["pelvis_tilt"] if pelvis_welded else 0.0

    return BuiltModel(
        model,
        anatomy,
        geometry,
        masses,
        specs,
        all_coords,
        [j for j, _p, _c, _lv in joints],
        list(anatomy.flags) + flags,
        joint_table=joints,
        thorax_body=bodies["thorax"],
        shoulders_local=shoulders,
        coordinate_map=coordinate_map,
        ground_tilt=ground_tilt,
        coordinate_joint=coordinate_joint,
        solve_note=note,
    )


def _shoulders_local(model, bodies: dict[str, str], scale: float) -> dict[str, np.ndarray]:
    """Christophy 2012 shoulder centres (sacrum frame, constants) in the user's thorax body frame."""
    import opensim as osim

    state = model.initSystem()
    sacrum = model.getBodySet().get(bodies["sacrum"])
    thorax = model.getBodySet().get(bodies["thorax"])
    out = {}
    for side, mirror in (("right", 1.0), ("left", -1.0)):
        x, y, z = np.asarray(C.CHRISTOPHY_SHOULDER_M) * np.array([1.0, 1.0, mirror]) * scale
        v = sacrum.findStationLocationInAnotherFrame(state, osim.Vec3(x, y, z), thorax)
        out[side] = np.array([v.get(0), v.get(1), v.get(2)])
    return out
