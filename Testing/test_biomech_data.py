"""Biomech stage on real label maps (../shared/data) and through the CLI on a small phantom."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("opensim")

from spinekit.biomech.anatomy import anatomy_from_labels  # noqa: E402
from spinekit.biomech.pipeline import internal_calibration, run_biomech  # noqa: E402
from spinekit.biomech.tasks import TASKS  # noqa: E402
from spinekit.io import read_labels, read_volume  # noqa: E402

DATA_TASKS = [TASKS[n] for n in ("standing", "flexion60_5kg", "lift20_roundback", "lateral20_5kg")]


def test_ct_lumbar_3mm_with_muscles_converges(shared_data):
    from spinekit.label_import import convert_labels

    folder = shared_data / "ct_lumbar_3mm"
    image = read_volume(folder / "ct.nii.gz")
    converted = convert_labels(read_labels(folder / "totalseg_total_fast.nii.gz"), "totalsegmentator")
    anatomy = anatomy_from_labels(converted.spine, converted.muscles, image, "male", 55, 175, 80, subject="ct3mm")
    assert {20, 21, 22, 23, 24} <= set(anatomy.bodies)
    assert any(g == "autochthon" for g, _s, _l in anatomy.muscles)
    calibration = internal_calibration(image, converted.muscles)
    assert 0.5 < calibration.slope < 1.5
    result = run_biomech(anatomy, DATA_TASKS, calibration)
    for res in result.results:
        assert res.converged, (res.task.name, res.notes)
    standing = result.results[0].compression("L4/L5")
    assert 400 < standing < 1000
    assert result.results[1].compression("L4/L5") > 2 * standing
    strength = result.strength[result.strength["metric"] == "vbmd"]
    assert strength["value"].between(40, 300).all(), strength
    assert result.risk["factor_of_risk"].between(0.01, 2.0).all()


def test_verse004_spine_only_converges_with_reference_strength(shared_data):
    path = next((shared_data / "verse004_labels").glob("*vert_msk.nii*"))
    anatomy = anatomy_from_labels(read_labels(path), None, None, "female", 60, 165, 60, modality="MRI")
    result = run_biomech(anatomy, DATA_TASKS[:2])
    assert all(res.converged for res in result.results)
    assert any("not patient-specific" in f for f in result.flags)
    assert any("no muscle labels" in f for f in result.flags)


def test_cli_on_phantom_writes_all_outputs(tmp_path):
    phantom = pytest.importorskip("spinekit.phantom")
    ph = phantom.make_phantom(replace(phantom.PhantomConfig(), spacing=(3.0, 3.0, 3.0), levels="T12-S1"))
    paths = ph.write(tmp_path / "phantom")
    from spinekit.biomech.cli import biomech_files

    written = biomech_files(
        paths["spine"],
        tmp_path / "out",
        "male",
        60,
        175,
        75,
        muscles_path=paths["muscles"],
        image_path=paths["image"],
        tasks=["standing", "lift:flex=30,left=5,right=5"],
        phantom_calibration=(0.8, 0.0),
    )
    names = {p.name for p in written}
    assert {"model.osim", "loads.csv", "strength.csv", "risk.csv", "risk.png", "flags.txt"} <= names
    risk = pd.read_csv(tmp_path / "out" / "risk.csv")
    assert set(risk["task"]) == {"standing", "lift"}
    assert (risk["factor_of_risk"] > 0).all()
    strength = pd.read_csv(tmp_path / "out" / "strength.csv")
    vbmd = strength[strength["metric"] == "vbmd"].set_index("structure")["value"]
    truth = ph.truth["vertebrae"]["L3"]["trabecular_bmd_mg_cm3"]
    assert np.isclose(vbmd["L3"], truth, rtol=0.15), (vbmd["L3"], truth)
    import opensim as osim

    model = osim.Model(str(tmp_path / "out" / "model.osim"))
    from spinekit.biomech.constants import CHRISTOPHY_FASCICLES

    assert model.getMuscles().getSize() == 2 * len(CHRISTOPHY_FASCICLES)
