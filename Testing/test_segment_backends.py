"""External backends end to end: our command lines, files and label mapping, with stand-in executables.

TotalSegmentator and nnU-Net cannot run here (no weights may be downloaded), so a small script with the tool's
name stands in for it on PATH: it checks the arguments we pass and writes what the real tool writes. For
TotalSegmentator these are its own outputs on ct_lumbar_3mm (``../shared/data``), so the mapping is tested on real
TotalSegmentator label maps.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np

from spinekit import labels as lb
from spinekit.io import Volume, read_volume, write_labels
from spinekit.segment.api import segment_image


def _stand_in(folder: Path, name: str, body: str) -> None:
    """An executable ``folder/name`` running ``body`` (Python) with ``args`` = the command-line arguments."""
    program = folder / f"{name}.py"
    program.write_text(f"import sys, shutil\nargs = sys.argv[1:]\n{body}\n")
    script = folder / name  # a /bin/sh launcher: a long interpreter path would overflow a #! line
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{program}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_totalsegmentator_backend_maps_its_real_outputs(tmp_path, monkeypatch, shared_data):
    folder = shared_data / "ct_lumbar_3mm"
    outputs = {
        "total": folder / "totalseg_total_fast.nii.gz",
        "vertebrae_body": folder / "totalseg_vertebrae_body.nii.gz",
    }
    _stand_in(
        tmp_path,
        "TotalSegmentator",
        f"outputs = {json.dumps({k: str(v) for k, v in outputs.items()})}\n"
        "assert '--ml' in args and args[args.index('-d') + 1] == 'cpu', args\n"
        "shutil.copy(outputs[args[args.index('--task') + 1]], args[args.index('-o') + 1])",
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    image = read_volume(folder / "ct.nii.gz")
    result = segment_image(image, ("spine", "muscles"), backend="totalsegmentator")
    spine, muscles = result.spine.array, result.muscles.array
    assert spine.shape == image.array.shape
    assert {lb.parse_level(n) for n in ("T12", "L1", "L2", "L3", "L4", "L5")} <= set(np.unique(spine).tolist())
    assert (spine == lb.SACRUM).sum() > 1000
    discs = [v for v in np.unique(spine) if lb.DISC_OFFSET < v < lb.DISC_OFFSET + 30]
    assert lb.disc_label(lb.parse_level("L4")) in discs and len(discs) >= 5  # discs from the vertebrae_body task
    assert {1, 2} <= set(np.unique(muscles).tolist())  # iliopsoas -> psoas left and right
    assert result.qc["backend"] == "totalsegmentator"
    assert result.qc["ribs"] == {"T12": ["left", "right"]}  # its level names checked against the ribs in the CT
    assert not {"transitional_unverified", "rib_on_lumbar", "no_rib_on_T12"} & {f["flag"] for f in result.qc["flags"]}


def test_nnunet_backend_maps_dataset_labels(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "L4": 1, "L5": 2, "disc_L4_L5": 3, "psoas_right": 4}})
    )
    prediction = np.zeros((20, 20, 20), np.uint8)
    prediction[2:8] = 2
    prediction[8:10] = 3
    prediction[10:16] = 1
    prediction[:, :3, :3] = 4
    ramp = np.broadcast_to(np.linspace(0.0, 100.0, 20, dtype=np.float32), (20, 20, 20))  # smooth: not "noise only"
    image = Volume(np.ascontiguousarray(ramp), (2.0, 2.0, 2.0), (5.0, -3.0, 7.0))
    labels_file = write_labels(image.with_array(prediction), tmp_path / "prediction.nii.gz")
    _stand_in(
        tmp_path,
        "nnUNetv2_predict_from_modelfolder",
        f"import os\nassert args[args.index('-m') + 1] == {str(model)!r}, args\n"
        "assert os.path.isfile(os.path.join(args[args.index('-i') + 1], 'case_0000.nii.gz'))\n"
        "os.makedirs(args[args.index('-o') + 1], exist_ok=True)\n"
        f"shutil.copy({str(labels_file)!r}, os.path.join(args[args.index('-o') + 1], 'case.nii.gz'))",
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    result = segment_image(image, ("spine", "muscles"), backend="nnunet", model_folder=model)
    spine = result.spine.array
    assert (spine[2:8, 5, 5] == lb.parse_level("L5")).all() and (spine[10:16, 5, 5] == lb.parse_level("L4")).all()
    assert (spine[8:10, 5, 5] == lb.disc_label(lb.parse_level("L4"))).all()
    assert (result.muscles.array[:, :3, :3] == 2).all()  # psoas right is our 2
