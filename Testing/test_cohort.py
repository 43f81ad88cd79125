"""Cohort runner: manifest validation, resumability, failures, Dask workers dying, report."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinekit.cohort import markers
from spinekit.cohort.api import run_cohort
from spinekit.cohort.manifest import read_manifest
from spinekit.cohort.stages import STAGES
from spinekit.errors import InputError
from spinekit.io import Volume, write_labels, write_volume

SPACING = (2.0, 2.0, 2.5)
#: voxels of one box vertebra: 6 slices x 14 rows x 12 columns, scaled by ``size`` below.
LEVELS = (20, 21, 22, 23, 24)


def box_subject(
    folder: Path, seed: int, height: int = 6, background_only: bool = False, spacing: tuple = SPACING
) -> tuple[Path, Path]:
    """A tiny CT-like image with five box vertebrae L1-L5 of ``height`` slices (known volumes)."""
    rng = np.random.default_rng(seed)
    shape = (60, 40, 40)
    image = rng.normal(40.0, 10.0, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    if not background_only:
        for n, label in enumerate(reversed(LEVELS)):  # k grows towards superior (LPS): L5 at the bottom
            k0 = 4 + 11 * n
            labels[k0 : k0 + height, 12:26, 14:26] = label
    image[labels > 0] += 400.0
    volume = Volume(image, spacing)
    folder.mkdir(parents=True, exist_ok=True)
    write_volume(volume, folder / "image.nii.gz")
    write_labels(volume.with_array(labels), folder / "spine.nii.gz")
    return folder / "image.nii.gz", folder / "spine.nii.gz"


def box_volume_mm3(height: int = 6) -> float:
    return height * 14 * 12 * float(np.prod(SPACING))


def write_manifest(root: Path, n: int, extra: list[str] | None = None, outlier: int | None = None) -> Path:
    rows = ["subject_id,image,spine,sex,age,reference_volume@L3"]
    for s in range(n):
        height = 12 if s == outlier else 6
        box_subject(root / f"s{s:02d}", s, height=height)
        reference = box_volume_mm3(height) * (1.0 + 0.01 * ((s % 3) - 1))
        rows.append(f"s{s:02d},s{s:02d}/image.nii.gz,s{s:02d}/spine.nii.gz,{'FM'[s % 2]},{50 + s},{reference}")
    rows.extend(extra or [])
    path = root / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def crashing_volumes_stage(row: dict, subject_dir: Path) -> list[Path]:
    """The real volumes stage, but the worker process dies the first time it meets subject s01."""
    flag = Path(os.environ["SPINEKIT_TEST_CRASH_FLAG"])
    if row["subject_id"] == "s01" and not flag.exists():
        flag.write_text("crashed once")
        os._exit(1)  # simulates a segfault / OOM kill of the worker
    return STAGES["volumes"].func(row, subject_dir)


@pytest.fixture()
def cohort(tmp_path: Path) -> Path:
    """Six good subjects, one corrupted image, one image without any spine."""
    corrupted = tmp_path / "bad"
    corrupted.mkdir()
    (corrupted / "image.nii.gz").write_bytes(np.random.default_rng(1).bytes(4096))
    box_subject(tmp_path / "nospine", 99, background_only=True)
    extra = ["bad,bad/image.nii.gz,,F,60,", "nospine,nospine/image.nii.gz,nospine/spine.nii.gz,M,61,"]
    return write_manifest(tmp_path, 6, extra)


def test_manifest_reports_every_problem_up_front(tmp_path: Path) -> None:
    image, spine = box_subject(tmp_path / "a", 0)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "image.nii.gz").write_bytes(b"\x00not an image" * 50)
    outside = tmp_path.parent / f"{tmp_path.name}_outside.nii.gz"
    shutil.copy(image, outside)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "subject_id,image,sex,age\n"
        "a,a/image.nii.gz,female,40\n"
        "a,a/image.nii.gz,F,41\n"
        "b,b/missing.nii.gz,M,42\n"
        "c,c/image.nii.gz,M,43\n"
        f"d,../{outside.name},M,44\n"
        "e/x,a/image.nii.gz,M,45\n"
        "f,a/image.nii.gz,x,old\n"
    )
    result = read_manifest(manifest)
    reasons = {(p.subject, p.column): p for p in result.problems}
    assert list(result.subjects["subject_id"]) == ["a", "f"]
    assert result.subjects.loc[0, "sex"] == "F" and result.subjects.loc[0, "image"] == str(image)
    assert "duplicate subject_id" in reasons[("a", "subject_id")].reason
    assert "not found" in reasons[("b", "image")].reason
    assert "not a readable image" in reasons[("c", "image")].reason
    assert "escapes the manifest root" in reasons[("d", "image")].reason
    assert "unsafe" in reasons[("e/x", "subject_id")].reason
    assert not reasons[("f", "age")].fatal and not reasons[("f", "sex")].fatal
    assert np.isnan(result.subjects.loc[1, "age"])
    allowed = read_manifest(manifest, allow_outside_root=True)
    assert "d" in set(allowed.subjects["subject_id"])
    (tmp_path / "nocols.csv").write_text("id,path\n1,a.nii.gz\n")
    with pytest.raises(InputError, match="subject_id"):
        read_manifest(tmp_path / "nocols.csv")


def test_in_process_run_lists_failures_and_measures_the_rest(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cohort(cohort, out, ["volumes"], workers=0, report=False)
    failures = pd.read_csv(out / "failures.csv", keep_default_na=False)
    bad = failures[failures["subject"] == "bad"]
    assert list(bad["stage"]) == ["manifest"] and "not a readable image" in bad["reason"].iloc[0]
    nospine = failures[failures["subject"] == "nospine"]
    assert list(nospine["stage"]) == ["volumes"] and "no spine found" in nospine["reason"].iloc[0]
    assert result.n_failed == 2
    metrics = pd.read_parquet(out / "cohort_metrics.parquet")
    assert sorted(metrics["subject"].unique()) == [f"s{s:02d}" for s in range(6)]
    assert len(metrics) == 6 * len(LEVELS)  # every subject x level exactly once
    np.testing.assert_allclose(metrics["value"], box_volume_mm3(), rtol=1e-9)
    assert set(metrics["sex"]) == {"F", "M"}
    assert pd.read_csv(out / "cohort_metrics.csv").shape == metrics.shape
    status = pd.read_csv(out / "status.csv")
    assert (status.set_index("subject").loc["s00"] == "done").all()


def _outputs_mtimes(out: Path, subjects: list[str]) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for s in subjects for p in (out / "subjects" / s).rglob("*") if p.is_file()}


def test_rerun_after_killing_the_whole_run_skips_completed_subjects(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 8)
    slow = tmp_path / "slow_stages.py"
    slow.write_text(
        textwrap.dedent(
            """
            import time
            from spinekit.cohort.stages import STAGES

            def volumes(row, subject_dir):
                time.sleep(0.4)
                return STAGES["volumes"].func(row, subject_dir)
            """
        )
    )
    out = tmp_path / "out"
    script = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import slow_stages; "
        "from spinekit.cohort.api import run_cohort; "
        f"run_cohort({str(manifest)!r}, {str(out)!r}, ['volumes'], workers=0, qc=False, "
        "registry={'volumes': slow_stages.volumes})"
    )
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.time() + 30
        while time.time() < deadline and len(list(out.glob("subjects/*/volumes/DONE.json"))) < 3:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    completed = sorted(p.parts[-3] for p in out.glob("subjects/*/volumes/DONE.json"))
    assert 3 <= len(completed) < 8, "the run should have been killed half way"
    before = _outputs_mtimes(out, completed)
    time.sleep(0.05)
    result = run_cohort(manifest, out, ["volumes"], workers=0, qc=False, report=False)
    assert result.run.count("skipped") == len(completed)
    assert result.run.count("done") == 8 - len(completed)
    assert _outputs_mtimes(out, completed) == before
    metrics = pd.read_parquet(out / "cohort_metrics.parquet")
    assert metrics.groupby("subject").size().to_dict() == {f"s{s:02d}": len(LEVELS) for s in range(8)}
    # a changed input invalidates the marker: that subject (only) is recomputed
    box_subject(tmp_path / "s00", 0, height=7)
    again = run_cohort(manifest, out, ["volumes"], workers=0, qc=False, report=False)
    assert again.run.count("done") == 1 and again.run.count("skipped") == 7


def test_dask_workers_survive_a_crash_and_a_rerun_retries_failures(cohort: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPINEKIT_TEST_CRASH_FLAG", str(tmp_path / "crash.flag"))
    out = tmp_path / "out"
    result = run_cohort(
        cohort, out, ["volumes"], workers=2, qc=False, report=False, registry={"volumes": crashing_volumes_stage}
    )
    assert (tmp_path / "crash.flag").exists(), "the worker crash was not exercised"
    assert result.run.workers == 2
    assert markers.read_json(out / "subjects" / "s01" / "volumes" / markers.DONE)["stage"] == "volumes"
    failures = pd.read_csv(out / "failures.csv", keep_default_na=False)
    assert sorted(failures["subject"]) == ["bad", "nospine"]
    # the failed subject gets its spine; the rerun retries it and only it
    box_subject(cohort.parent / "nospine", 99)
    rerun = run_cohort(cohort, out, ["volumes"], workers=0, qc=False, report=False)
    assert rerun.run.count("done") == 1 and rerun.run.count("skipped") == 6
    assert list(pd.read_csv(out / "failures.csv")["subject"]) == ["bad"]


def test_report_embeds_figures_flags_outliers_and_agreement(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 10, outlier=3)
    out = tmp_path / "out"
    run_cohort(manifest, out, ["volumes"], workers=0)
    page = (out / "report.html").read_text()
    figures = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(figures) >= 4
    assert "http://" not in page and "https://" not in page and "<script" not in page
    outliers = page.split("<h2>Outliers</h2>")[1].split("<h2>")[0]
    assert "s03" in outliers and "s04" not in outliers
    assert "thumbnail s03" in page
    assert "Agreement with reference" in page and "Bland-Altman" in page
    assert "Acquisition groups" in page
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed: headless rendering not checked")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--window-size=1200,3000", f"--screenshot={shot}", (out / "report.html").as_uri()],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape[0] >= 1000 and pixels.std() > 10, "the rendered page looks blank"


def test_cli_exit_code_and_unknown_stage(cohort: Path, tmp_path: Path, capsys) -> None:
    from spinekit.cli import main

    out = tmp_path / "out"
    code = main(["cohort", str(cohort), "--out", str(out), "--stages", "volumes", "--workers", "0", "--no-report"])
    assert code == 1 and (out / "failures.csv").exists()
    assert "2 failures listed" in capsys.readouterr().err
    assert main(["cohort", str(cohort), "--out", str(out), "--stages", "nope", "--workers", "0"]) == 2


def test_slicer_batch_script_self_test_runs_outside_slicer(tmp_path: Path) -> None:
    script = Path(__file__).parent / "Slicer" / "batch_cohort.py"
    done = subprocess.run(
        [sys.executable, str(script), "--self-test", "--workers", "1", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "batch_cohort: OK" in done.stdout
    assert (tmp_path / "out" / "report.html").exists()


def test_real_measure_stage_when_available(tmp_path: Path) -> None:
    pytest.importorskip("spinekit.morphometry.measure")
    rows = ["subject_id,image,spine"]
    for s in range(2):
        box_subject(tmp_path / f"m{s}", s, spacing=(2.0, 2.0, 2.0))
        rows.append(f"m{s},m{s}/image.nii.gz,m{s}/spine.nii.gz")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = run_cohort(tmp_path / "manifest.csv", out, ["measure"], workers=0, qc=False, report=False)
    assert result.n_failed == 0, result.failures.to_string()
    metrics = pd.read_parquet(out / "cohort_metrics.parquet")
    heights = metrics[(metrics["metric"] == "body_height_middle") & metrics["structure"].isin(["L2", "L3", "L4"])]
    assert len(heights) == 6
    # 6 slices of 2 mm; within one voxel (edge vs centre conventions belong to the morphometry tests)
    np.testing.assert_allclose(heights["value"], 6 * 2.0, atol=2.0 + 0.5)
    # the cohort adds nothing and loses nothing: identical to calling the core on the same files
    from spinekit.io import read_labels, read_volume
    from spinekit.morphometry.measure import measure_subject

    image = read_volume(tmp_path / "m1" / "image.nii.gz")
    direct = measure_subject(read_labels(tmp_path / "m1" / "spine.nii.gz"), image=image, subject="m1")
    ours = metrics[metrics["subject"] == "m1"].reset_index(drop=True)
    assert len(ours) == len(direct)
    np.testing.assert_allclose(ours["value"].to_numpy(float), direct["value"].to_numpy(float), equal_nan=True)


def test_missing_stage_is_reported_not_a_crash_and_blocks_what_needs_it(tmp_path: Path) -> None:
    from spinekit.cohort.stages import Stage, import_stage_module

    def absent(row: dict, subject_dir: Path) -> list[Path]:
        import_stage_module("segment", "spinekit.no_such_segmenter")
        return []

    registry = {
        "segment": Stage("segment", absent),
        "volumes": Stage("volumes", STAGES["volumes"].func, ("segment",), STAGES["volumes"].inputs),
    }
    box_subject(tmp_path / "a", 0)
    (tmp_path / "m.csv").write_text("subject_id,image\na,a/image.nii.gz\n")
    result = run_cohort(tmp_path / "m.csv", tmp_path / "out", ["volumes", "segment"], workers=0, registry=registry,
                        qc=False, report=False)  # fmt: skip
    failures = result.failures.set_index("stage")
    assert "stage 'segment' is not available" in failures.loc["segment", "reason"]
    assert failures.loc["volumes", "status"] == "blocked" and "segment" in failures.loc["volumes", "reason"]


def test_real_register_and_biomech_stages_write_what_the_commands_write(tmp_path: Path) -> None:
    """A phantom pair through the real register and biomech stages: per-level transforms, loads, strength, risk."""
    from spinekit.phantom import FollowupConfig, PhantomConfig, make_followup, make_phantom

    baseline = make_phantom(PhantomConfig(levels="L2-L4", spacing=(2.0, 2.0, 2.0), field_of_view="spine"))
    baseline.write(tmp_path / "s1")
    make_followup(baseline, FollowupConfig(seed=1)).write(tmp_path / "s1" / "followup")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "subject_id,image,spine,muscles,followup,followup_spine,sex,age,height_cm,weight_kg\n"
        "s1,s1/image.nii.gz,s1/spine.nii.gz,s1/muscles.nii.gz,s1/followup/image.nii.gz,"
        "s1/followup/spine.nii.gz,F,62,165,60\n"
    )
    result = run_cohort(manifest, tmp_path / "out", stages=("register", "biomech"), workers=0, report=False)
    assert result.n_failed == 0, result.failures
    subject = tmp_path / "out" / "subjects" / "s1"
    assert {p.name for p in (subject / "register").glob("*.tfm")} == {
        "L2_followup_to_baseline.tfm", "L3_followup_to_baseline.tfm", "L4_followup_to_baseline.tfm"
    }  # fmt: skip
    for name in ("loads.csv", "strength.csv", "risk.csv", "model.osim"):
        assert (subject / "biomech" / name).stat().st_size > 0
    metrics = pd.read_csv(tmp_path / "out" / "cohort_metrics.csv")
    assert {"register", "biomech"} <= set(metrics["stage"])
