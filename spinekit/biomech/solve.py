"""Solve a task: OpenSim StaticOptimization, then JointReaction, run headless through AnalyzeTool in a temp dir.

Static optimisation minimises the sum of squared activations (OpenSim default exponent 2) of the muscles and of the
reserve actuators (constants.RESERVE_OPTIMAL_MOMENT_NM, expensive) under equilibrium of every coordinate. Muscle force
is activation x maximum isometric force (muscle physiology off: static posture, no fibre-length information from the
scan). JointReaction then applies those forces and reports, for each intervertebral joint, the force that the lower
body exerts on the upper body expressed in the upper (child) vertebra's frame:

- ``compression_N`` = +Y component (along the upper vertebra's superior axis; positive = compressive),
- ``shear_ap_N`` = -X component (positive = anterior shear: the load pushes the upper vertebra forward relative to
  the lower one, the lower one resists backwards),
- ``shear_lateral_N`` = -Z component (positive = to the right).

A task counts as converged when every muscle activation is within [0, 1] and no reserve actuator carries more than
constants.RESERVE_ABS_LIMIT_NM or, if larger, constants.RESERVE_SHARE_LIMIT of the largest moment the muscles produce
about that joint's coordinates; the largest reserve moment is reported either way.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spinekit.biomech import constants as C
from spinekit.biomech.model import BuiltModel, quiet_opensim
from spinekit.biomech.tasks import Task, hand_and_arm_points
from spinekit.errors import SpinekitError

log = logging.getLogger(__name__)

#: Frames in the static "motion" (a constant posture; AnalyzeTool fits GCV splines, which need at least 6).
N_FRAMES = 6
DURATION_S = 0.01
#: The analyses run at the last frame only: the posture is constant, and solving all six frames gave the same
#: loads (to the printed digit) at ~10-20 x the time for flexed postures (measured here: 10.8 s vs 0.6 s).


class SolveError(SpinekitError):
    """OpenSim could not run the analyses (not the same as a non-converged optimisation)."""


@dataclass
class TaskResult:
    """Loads of one task: per-level table, muscle forces, convergence."""

    task: Task
    levels: pd.DataFrame  # level, compression_N, shear_ap_N, shear_lateral_N
    muscle_forces: dict[str, float]
    reserves: dict[str, float]
    converged: bool
    max_reserve_nm: float
    max_activation: float
    notes: list[str] = field(default_factory=list)

    def compression(self, level: str) -> float:
        row = self.levels[self.levels["level"] == level]
        return float(row["compression_N"].iloc[0]) if len(row) else math.nan


def _read_sto(path: Path) -> pd.DataFrame:
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().lower() == "endheader") + 1
    from io import StringIO

    return pd.read_csv(StringIO("\n".join(lines[start:])), sep=r"\s+")


def _write_motion(path: Path, coordinates: list[str], values: dict[str, float]) -> None:
    header = [
        "coordinates",
        "version=1",
        f"nRows={N_FRAMES}",
        f"nColumns={len(coordinates) + 1}",
        "inDegrees=no",
        "endheader",
        "\t".join(["time", *coordinates]),
    ]
    rows = []
    for i in range(N_FRAMES):
        t = DURATION_S * i / max(1, N_FRAMES - 1)
        rows.append("\t".join([f"{t:.6f}", *(f"{values[c]:.10f}" for c in coordinates)]))
    path.write_text("\n".join(header + rows) + "\n")


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _task_model(built: BuiltModel, task: Task):
    """Copy of the model with the task's arm weights and hand loads as PrescribedForces on the thorax.

    A model whose pelvis is welded to its ground (``built.ground_tilt``) is tilted by rotating gravity, the arm
    direction and the hand loads by the pelvic tilt about +Z instead (the same statics).
    """
    import opensim as osim

    model = osim.Model(built.model)
    tilt = _rot_z(built.tilt(task))
    gravity = tilt @ np.array([0.0, -C.GRAVITY, 0.0])
    model.setGravity(osim.Vec3(*gravity))
    state = model.initSystem()
    values = built.values(task)
    for name in built.coordinates:
        model.updCoordinateSet().get(name).setValue(state, values[name], False)
    model.realizePosition(state)
    thorax = model.getBodySet().get(built.thorax_body)
    ground = model.getGround()
    loads = []
    for side, kg in (("left", task.left_hand_kg), ("right", task.right_hand_kg)):
        sg = thorax.findStationLocationInGround(state, osim.Vec3(*built.shoulder_local(side)))
        shoulder = np.array([sg.get(0), sg.get(1), sg.get(2)])
        arm_com, hand = hand_and_arm_points(
            task, shoulder, built.masses.arm_com_from_shoulder_m, built.masses.arm_length_m, tilt
        )
        loads.append((f"arm_{side}", built.masses.arm, arm_com))
        if kg > 0:
            loads.append((f"hand_load_{side}", kg, hand))
    local_points = [ground.findStationLocationInAnotherFrame(state, osim.Vec3(*p), thorax) for _n, _k, p in loads]
    for (name, kg, _point), local in zip(loads, local_points, strict=True):
        force = osim.PrescribedForce(name, thorax)
        force.setPointIsInGlobalFrame(False)
        force.setForceIsInGlobalFrame(True)
        fx, fy, fz = gravity * kg
        force.setForceFunctions(osim.Constant(fx), osim.Constant(fy), osim.Constant(fz))
        force.setPointFunctions(osim.Constant(local.get(0)), osim.Constant(local.get(1)), osim.Constant(local.get(2)))
        model.addForce(force)
    model.finalizeConnections()
    return model


def solve_task(built: BuiltModel, task: Task, workdir: Path | None = None) -> TaskResult:
    """Run static optimisation and joint reaction for one task; returns per-level loads and muscle forces."""
    import opensim as osim

    quiet_opensim()
    task.validate()
    with tempfile.TemporaryDirectory(prefix="spinekit_biomech_") as tmp_name:
        tmp = Path(workdir) if workdir is not None else Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        model = _task_model(built, task)
        motion = tmp / f"{task.name}_coordinates.mot"
        _write_motion(motion, built.coordinates, built.values(task))
        end = DURATION_S
        so = osim.StaticOptimization()
        so.setName("StaticOptimization")
        so.setStartTime(end)
        so.setEndTime(end)
        so.setUseModelForceSet(True)
        so.setActivationExponent(2.0)
        so.setUseMusclePhysiology(False)
        so.setConvergenceCriterion(1e-6)
        so.setMaxIterations(1000)
        _run_tool(model, f"{task.name}_so", motion, tmp, end, so)
        forces_file = tmp / f"{task.name}_so_StaticOptimization_force.sto"
        if not forces_file.exists():
            raise SolveError(f"static optimisation wrote no force file for task {task.name} (see OpenSim log)")
        jr = osim.JointReaction()
        jr.setName("JointReaction")
        jr.setStartTime(end)
        jr.setEndTime(end)
        jr.setForcesFileName(str(forces_file))
        names, on, frame = osim.ArrayStr(), osim.ArrayStr(), osim.ArrayStr()
        for joint, _parent, _child, _level in built.reported_joints():
            names.append(joint)
        on.append("child")
        frame.append("child")
        jr.setJointNames(names)
        jr.setOnBody(on)
        jr.setInFrame(frame)
        _run_tool(_task_model(built, task), f"{task.name}_jr", motion, tmp, end, jr)
        reaction = _read_sto(tmp / f"{task.name}_jr_JointReaction_ReactionLoads.sto")
        forces = _read_sto(forces_file)
        activations = _read_sto(tmp / f"{task.name}_so_StaticOptimization_activation.sto")
    scale = _joint_moment_scale(built, task, forces.iloc[-1])
    return _result(built, task, reaction, forces, activations, scale)


def _posed_state(model, built: BuiltModel, task: Task):
    """A new state of ``model`` with every coordinate at the task's posture."""
    state = model.initSystem()
    values = built.values(task)
    coords = model.getCoordinateSet()
    for name in built.coordinates:
        coords.get(name).setValue(state, values[name], False)
    return state


def _joint_moment_scale(built: BuiltModel, task: Task, forces: pd.Series) -> dict[str, float]:
    """Per joint, the largest |moment| its muscles produce about any of its coordinates (N m) in the solution."""
    model = _task_model(built, task)
    state = _posed_state(model, built, task)
    coords = model.getCoordinateSet()
    model.realizePosition(state)
    muscles = model.getMuscles()
    scale: dict[str, float] = {}
    for name in built.coordinates:
        if name.startswith("pelvis") or (built.coordinate_joint is not None and name not in built.coordinate_joint):
            continue
        coord = coords.get(name)
        moment = 0.0
        for i in range(muscles.getSize()):
            muscle = muscles.get(i)
            force = float(forces.get(muscle.getName(), 0.0))
            if force > 1e-3:
                moment += force * muscle.computeMomentArm(state, coord)
        joint = built.coordinate_joint[name] if built.coordinate_joint is not None else name.rsplit("_", 1)[0]
        scale[joint] = max(scale.get(joint, 0.0), abs(moment))
    return scale


def net_joint_moments(built: BuiltModel, task: Task) -> dict[str, float]:
    """Generalised forces (N m) the muscles and reserves together must supply at each coordinate in ``task``.

    Inverse dynamics of the static posture (OpenSim InverseDynamicsSolver, zero accelerations) with gravity, arm
    weights and hand loads and every muscle and actuator switched off. Negative flexion (FE) = an extension moment
    is needed.
    """
    import opensim as osim

    model = _task_model(built, task)
    for i in range(model.getForceSet().getSize()):
        force = model.getForceSet().get(i)
        if force.getConcreteClassName() != "PrescribedForce":
            force.set_appliesForce(False)
    state = _posed_state(model, built, task)
    coords = model.getCoordinateSet()
    model.realizeDynamics(state)
    tau = osim.InverseDynamicsSolver(model).solve(state, osim.Vector(state.getNU(), 0.0))
    return {coords.get(i).getName(): float(tau.get(i)) for i in range(coords.getSize())}


def moment_capacity(built: BuiltModel, task: Task, coordinate: str) -> tuple[float, float]:
    """Largest extension and flexion moments (N m, both >= 0) the muscles can produce about ``coordinate``.

    Sum over muscles of maximum isometric force x moment arm (OpenSim ``computeMomentArm`` in the task's posture),
    extensors and flexors apart: the isolated-joint capacity that strength measurements are compared with. The
    plausibility range used by the tests, ~200-400 N m of trunk extension in healthy adults, is attributed to
    McGill SM, Patt N, Norman RW (1988) J Biomech 21:329-341 and Cholewicki J, McGill SM (1996) Clin Biomech 11:1-15
    (NOT VERIFIED against their tables here). A flexion coordinate (FE, flexion about -Z) has negative moment arms
    for extensors.
    """
    model = _task_model(built, task)
    state = model.initSystem()
    values = built.values(task)
    for name in built.coordinates:
        model.updCoordinateSet().get(name).setValue(state, values[name], False)
    model.realizePosition(state)
    coord = model.getCoordinateSet().get(coordinate)
    muscles = model.getMuscles()
    extension = flexion = 0.0
    for i in range(muscles.getSize()):
        muscle = muscles.get(i)
        moment = muscle.getMaxIsometricForce() * muscle.computeMomentArm(state, coord)
        extension += max(0.0, -moment)
        flexion += max(0.0, moment)
    return extension, flexion


def _run_tool(model, name: str, motion: Path, results: Path, end: float, analysis) -> None:
    import opensim as osim

    tool = osim.AnalyzeTool()
    tool.setName(name)
    tool.getAnalysisSet().cloneAndAppend(analysis)
    tool.setModel(model)
    tool.setLoadModelAndInput(True)
    tool.setCoordinatesFileName(str(motion))
    tool.setLowpassCutoffFrequency(-1)
    tool.setInitialTime(end)
    tool.setFinalTime(end)
    tool.setResultsDir(str(results))
    try:
        ok = tool.run()
    except RuntimeError as exc:
        raise SolveError(f"OpenSim AnalyzeTool failed for {name}: {str(exc).strip().splitlines()[-1]}") from None
    if not ok:
        raise SolveError(f"OpenSim AnalyzeTool reported failure for {name}")


def _result(
    built: BuiltModel, task: Task, reaction: pd.DataFrame, forces: pd.DataFrame, act: pd.DataFrame, scale: dict
) -> TaskResult:
    row = reaction.iloc[-1]
    levels = []
    for joint, _parent, child, level in built.reported_joints():
        prefix = f"{joint}_on_{child}_in_{child}_"
        fx, fy, fz = (float(row[prefix + c]) for c in ("fx", "fy", "fz"))
        levels.append({"level": level, "compression_N": fy, "shear_ap_N": -fx, "shear_lateral_N": -fz})
    frow = forces.iloc[-1]
    muscle_forces = {s.name: float(frow[s.name]) for s in built.muscles if s.name in frow}
    reserves = {c: float(v) for c, v in frow.items() if str(c).startswith("reserve_")}
    arow = act.iloc[-1]
    muscle_acts = [float(arow[s.name]) for s in built.muscles if s.name in arow]
    max_reserve = max((abs(v) for v in reserves.values()), default=0.0)
    max_act = max(muscle_acts, default=0.0)
    notes = [built.solve_note] if built.solve_note else []
    converged = not built.solve_note
    for name, value in reserves.items():
        coord = name.removeprefix("reserve_")
        joint = (
            built.coordinate_joint.get(coord, coord) if built.coordinate_joint is not None else coord.rsplit("_", 1)[0]
        )
        limit = max(C.RESERVE_ABS_LIMIT_NM, C.RESERVE_SHARE_LIMIT * scale.get(joint, 0.0))
        if abs(value) > limit:
            converged = False
            notes.append(
                f"reserve actuator {name} carries {value:.1f} N m (limit {limit:.1f}): muscles cannot balance the load"
            )
    if max_act > 1.0 + 1e-3 or min(muscle_acts, default=0.0) < -1e-3:
        converged = False
        notes.append(f"muscle activations outside [0, 1] (max {max_act:.2f})")
    if not np.all(np.isfinite([lv["compression_N"] for lv in levels])):
        converged = False
        notes.append("non-finite joint reaction")
    return TaskResult(task, pd.DataFrame(levels), muscle_forces, reserves, converged, max_reserve, max_act, notes)


def solve_tasks(built: BuiltModel, tasks: list[Task], progress=None) -> list[TaskResult]:
    """Solve each task in turn; ``progress(fraction, message)`` is called before each."""
    results = []
    for index, task in enumerate(tasks):
        if progress is not None:
            progress(index / max(1, len(tasks)), f"solving {task.name}")
        results.append(solve_task(built, task))
    if progress is not None:
        progress(1.0, "done")
    return results
