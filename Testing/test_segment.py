"""Tests of spinekit.segment: synthesis, loss, instances and levels, QC, training, inference, CLI, backends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spinekit import labels as lb
from spinekit.errors import InputError
from spinekit.io import Volume, read_labels, read_volume, write_labels, write_volume
from spinekit.segment import qc
from spinekit.segment.instances import UNKNOWN_VERTEBRA_OFFSET, assign_instances, muscle_midline_x, split_muscle_sides
from spinekit.segment.networks import build_network, load_model, task_config
from spinekit.segment.synthesis import SynthesisSettings, synthesize_image

SPACING = 2.0


def toy_spine(n_vertebrae: int = 4, sacrum: bool = True) -> Volume:
    """Semantic map (1 vertebra, 2 sacrum, 3 disc, 4 canal) of stacked boxes: 26 mm bodies, 10 mm discs."""
    nz = 10 + (20 if sacrum else 0) + n_vertebrae * 18
    array = np.zeros((nz, 30, 30), np.uint8)  # k = superior (LPS +z), j = posterior, i = left
    k = 5
    if sacrum:
        array[k : k + 20, 5:20, 5:25] = 2
        k += 20
    for _ in range(n_vertebrae):
        array[k : k + 5, 5:20, 7:23] = 3
        k += 5
        array[k : k + 13, 5:20, 5:25] = 1
        array[k : k + 13, 20:26, 13:17] = 1  # posterior arch behind the canal
        k += 13
    array[:, 21:24, 13:17][array[:, 21:24, 13:17] == 0] = 4
    return Volume(array, (SPACING,) * 3)


def test_synthesis_reproducible_and_normalised():
    labels = toy_spine().array.astype(np.int32)
    a = synthesize_image(labels, np.random.default_rng(1))
    b = synthesize_image(labels, np.random.default_rng(1))
    c = synthesize_image(labels, np.random.default_rng(2))
    assert np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and a.dtype == np.float32
    assert not np.allclose(a, c)
    # Labels must stay visible: mean intensities of bone and background differ beyond the noise.
    assert (
        abs(a[labels == 1].mean() - a[labels == 0].mean()) > 0.01
        or abs(c[labels == 1].mean() - c[labels == 0].mean()) > 0.01
    )


def test_network_is_deepedit_ready():
    import torch

    config = task_config("spine")
    assert config.in_channels == 1 + len(config.classes)
    net = build_network(config)
    out = net(torch.zeros(1, config.in_channels, 32, 32, 32))
    assert out.shape == (1, config.n_classes, 32, 32, 32)
    size_mb = sum(p.numel() for p in net.parameters()) * 4 / 1e6
    assert size_mb < 10


def test_guidance_channels_from_clicks():
    from spinekit.segment.guidance import guidance_channels, simulate_clicks

    target = toy_spine().array
    names = task_config("spine").classes
    auto = guidance_channels(np.zeros(target.shape, np.float32), None, names)
    assert auto.shape == (1 + len(names), *target.shape) and not auto[1:].any()
    clicks = simulate_clicks(target, names, np.random.default_rng(0))
    x = guidance_channels(np.zeros(target.shape, np.float32), clicks, names)
    for index, name in enumerate(names):
        for k, j, i in clicks[name]:
            assert target[k, j, i] == index
            assert x[1 + index, k, j, i] > 0.5 and x[1 + index].max() == pytest.approx(1.0)


def test_marginal_loss_accepts_unknown_classes():
    import torch

    from spinekit.segment.train import marginal_loss

    target = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    logits = torch.full((1, 5, 4, 4, 4), -10.0)
    logits[:, 4] = 10.0  # network says "canal" where the source says background
    known = torch.eye(5)
    unknown = torch.eye(5)
    unknown[0, 4] = 1.0  # this source does not label the canal
    assert float(marginal_loss(logits, target, [unknown], 5)) < 0.01
    assert float(marginal_loss(logits, target, [known], 5)) > 5


def test_levels_counted_from_sacrum():
    result = assign_instances(toy_spine(4, sacrum=True))
    assert result.levels_known
    assert result.levels == [21, 22, 23, 24, lb.SACRUM]  # L2..L5 + sacrum
    spine = result.spine.array
    present = set(np.unique(spine).tolist())
    assert {121, 122, 123, 124, lb.CANAL} <= present
    # L5 sits directly above the lowest disc (L5/S1 = 124) which sits on the sacrum.
    z = {v: np.argwhere(spine == v)[:, 0].mean() for v in (24, 124, lb.SACRUM, 23)}
    assert z[lb.SACRUM] < z[124] < z[24] < z[23]
    for v in (21, 22, 23, 24):
        assert (spine == v).sum() * 8 == pytest.approx((13 * 15 * 20 + 13 * 6 * 4) * 8, rel=0.02)


def test_inferior_articular_process_below_the_disc_plane_stays_with_its_vertebra():
    semantic = toy_spine(2, sacrum=True)
    array = semantic.array.copy()
    disc_k = np.flatnonzero((array == 3).any(axis=(1, 2)))
    upper_disc = disc_k[disc_k > disc_k.min() + 6]  # the disc under the upper vertebra (5 slices, 10 mm)
    low = upper_disc.min()
    array[low + 1 : upper_disc.max() + 1, 25, 13:17] = 1  # process 26 mm behind the disc centre, 3 mm below its plane
    spine = assign_instances(semantic.with_array(array)).spine.array
    upper = spine[upper_disc.max() + 3, 10, 15]
    lower = spine[low - 3, 10, 15]
    assert upper != lower and lower in (22, 23, 24)
    assert spine[low + 1, 25, 15] == upper  # the process follows the vertebra it belongs to
    assert spine[low - 1, 25, 15] == lower  # the arch of the vertebra below (6 mm under the plane) does not


def test_without_sacrum_levels_are_unknown_and_flagged():
    result = assign_instances(toy_spine(2, sacrum=False))
    assert not result.levels_known
    assert result.levels == [UNKNOWN_VERTEBRA_OFFSET + 1, UNKNOWN_VERTEBRA_OFFSET + 2]
    assert any(f["flag"] == "levels_unknown" for f in result.flags)
    assert not np.isin(result.spine.array, list(range(1, 29))).any()


def test_levels_on_real_ct_silver_labels(shared_data):
    """True semantic map of the real CT (TotalSegmentator labels) -> per-level Dice against its own levels."""
    from spinekit.label_import import convert_labels
    from spinekit.segment.dataset import real_sources, to_working_grid

    config = task_config("spine")
    source = next(s for s in real_sources(shared_data, config) if s.name == "ct_lumbar_3mm")
    ts = to_working_grid(read_labels(shared_data / "ct_lumbar_3mm" / "totalseg_total_fast.nii.gz"), 3.0, True)
    result = assign_instances(ts.with_array(source.target.astype(np.uint8)))
    truth = convert_labels(ts, "totalsegmentator").spine.array
    assert result.levels_known and result.levels[-6:] == [20, 21, 22, 23, 24, lb.SACRUM]
    for level in (20, 21, 22, 23, 24):
        a, b = result.spine.array == level, truth == level
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9


def test_instances_on_phantom_truth():
    phantom_module = pytest.importorskip("spinekit.phantom")
    if not hasattr(phantom_module, "make_phantom"):
        pytest.skip("spinekit.phantom.make_phantom not available yet")
    from spinekit.segment.dataset import spine_targets, to_working_grid

    phantom = phantom_module.make_phantom(phantom_module.PhantomConfig(levels="L2-S1", spacing=(2.0, 2.0, 2.0)))
    truth = to_working_grid(phantom.spine, 2.0, True)
    result = assign_instances(truth.with_array(spine_targets(truth.array).astype(np.uint8)))
    assert result.levels_known
    assert [v for v in result.levels if v != lb.SACRUM] == [21, 22, 23, 24]
    for level in (21, 22, 23, 24):
        a, b = result.spine.array == level, truth.array == level
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.85


def test_qc_flags_fragments_and_volumes():
    spine = assign_instances(toy_spine(3)).spine
    array = spine.array.copy()
    array[0:2, 0:2, 0:2] = 0
    array[-4:, 0:4, 0:4] = 23  # a far fragment of L4 (> 10 % of it? no: small) and a tiny extra label
    array[array == 22] = 0
    array[2:5, 26:29, 26:29] = 22  # L3 shrunk to a 0.2 cm3 blob inside the scan
    array[array == 24] = 0
    array[-2:, 5:20, 5:25] = 24  # a vertebra cut to a thin slab by the edge of the field of view
    flags = qc.spine_flags(spine.with_array(array), [22, 23, 24, 26], True)
    names = {(f["flag"], f["label"]) for f in flags}
    assert ("implausible_volume", 22) in names
    assert ("cut_by_field_of_view", 24) in names and ("implausible_volume", 24) not in names
    assert qc.fragmented(np.isin(np.arange(10), [0, 1, 2, 6, 7, 8]))


def test_muscle_sides_by_position():
    classes = np.zeros((4, 4, 10), np.uint8)
    classes[:, :, 1] = 1
    classes[:, :, 8] = 1
    volume = Volume(classes, (1.0, 1.0, 1.0), (-5.0, 0.0, 0.0))
    sides = split_muscle_sides(volume, midline_x_mm=0.0).array
    assert set(np.unique(sides[:, :, 8])) == {lb.muscle_label("psoas", "left")}  # +x (LPS) is the left
    assert set(np.unique(sides[:, :, 1])) == {lb.muscle_label("psoas", "right")}


def test_load_model_missing_is_clear(tmp_path):
    with pytest.raises(InputError, match="spinekit train"):
        load_model("spine", tmp_path)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    """Freshly trained (a few steps) spine and muscle models in a temporary models folder."""
    import torch

    from spinekit.segment.train import TrainSettings, export

    folder = tmp_path_factory.mktemp("models")
    for task in ("spine", "muscles"):
        torch.manual_seed(0)
        export(build_network(task_config(task)), task_config(task), folder, TrainSettings(task=task), 0, 0.0)
    return folder


def test_training_is_resumable_and_seeded(tmp_path):
    import torch

    from spinekit.segment.train import TrainSettings, train

    session = tmp_path / "corrections" / "case1"
    spine = toy_spine(3)
    image = spine.with_array(np.where(spine.array == 1, 800.0, 100.0).astype(np.float32))
    write_volume(image, session / "image.nii.gz")
    write_labels(spine.with_array(assign_instances(spine).spine.array), session / "spine.nii.gz")
    settings = dict(task="spine", batch=1, n_phantoms=0, data_dir=str(tmp_path / "none"), checkpoint_every=1,
                    extra_dirs=(str(tmp_path / "corrections"),))  # fmt: skip
    train(TrainSettings(steps=2, **settings), tmp_path / "a")
    train(TrainSettings(steps=2, **settings), tmp_path / "b")
    a = torch.load(tmp_path / "a" / "spine.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "spine.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    train(TrainSettings(steps=3, **settings), tmp_path / "a", resume=True)
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3
    meta = json.loads((tmp_path / "a" / "spine.json").read_text())
    assert meta["training"]["steps_done"] == 3
    assert meta["config"]["spacing_mm"] == 3.0
    train(TrainSettings(steps=1, spacing_mm=2.0, **settings), tmp_path / "fine")
    _, config, _ = load_model("spine", tmp_path / "fine", "cpu")
    assert config.spacing_mm == 2.0  # inference then runs on the grid the network was trained on


def test_segment_cli_writes_outputs(tmp_path, tiny_models):
    from spinekit.cli import main

    spine = toy_spine(3)
    image = Volume(np.where(spine.array > 0, 700.0, -1000.0).astype(np.float32), (2.0, 2.0, 2.0), (10.0, -4.0, 3.0))
    write_volume(image, tmp_path / "image.nii.gz")
    rc = main(["segment", str(tmp_path / "image.nii.gz"), "--out", str(tmp_path / "out"),
               "--models-dir", str(tiny_models)])  # fmt: skip
    assert rc == 0
    report = json.loads((tmp_path / "out" / "segment.json").read_text())
    assert set(report["model_versions"]) == {"spine", "muscles"}
    assert report["qc"]["modality"] == "ct"
    assert report["timings_s"]["total_s"] > 0
    for name in ("spine", "muscles"):
        out = read_labels(tmp_path / "out" / f"{name}.nii.gz")
        assert out.same_grid(image)


def test_pure_noise_gives_empty_result_with_flag(tiny_models):
    from spinekit.segment.api import segment_image

    noise = Volume(np.random.default_rng(0).normal(0, 1, (48, 64, 64)).astype(np.float32), (1.5, 1.5, 1.5))
    result = segment_image(noise, models_dir=tiny_models)
    assert not result.spine.array.any() and not result.muscles.array.any()
    assert any(f["flag"] == "no_spine_found" for f in result.qc["flags"])


def test_shipped_model_rejects_noise():
    from spinekit.segment.api import segment_image
    from spinekit.segment.networks import model_paths

    if not model_paths("spine")[0].is_file():
        pytest.skip("no shipped spine model")
    noise = Volume(np.random.default_rng(1).normal(0, 1, (48, 64, 64)).astype(np.float32), (1.5, 1.5, 1.5))
    result = segment_image(noise, targets=("spine",))
    assert not result.spine.array.any()
    assert any(f["flag"] == "no_spine_found" for f in result.qc["flags"])


def test_bad_arguments_are_clear():
    from spinekit.segment.api import segment_image

    image = Volume(np.zeros((8, 8, 8), np.float32))
    with pytest.raises(InputError, match="targets"):
        segment_image(image, targets=("liver",))
    with pytest.raises(InputError, match="backend"):
        segment_image(image, targets=("spine",), backend="magic")


def test_external_backends(tmp_path, monkeypatch):
    from spinekit.segment.backends import NnUNetBackend, TotalSegmentatorBackend

    monkeypatch.setenv("PATH", str(tmp_path))
    image = Volume(np.zeros((8, 8, 8), np.float32))
    with pytest.raises(InputError, match="TotalSegmentator is not installed"):
        TotalSegmentatorBackend().segment(image, ("spine",), "ct", "cpu")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {
        "background": 0, "vertebrae_L1": 1, "L2": 2, "sacrum": 3, "disc_L1_L2": 4, "spinal_canal": 5,
        "psoas_left": 6, "liver": 7}}))  # fmt: skip
    spine, muscles = NnUNetBackend(tmp_path).label_table()
    assert spine == {1: 20, 2: 21, 3: lb.SACRUM, 4: 120, 5: lb.CANAL}
    assert muscles == {6: 1}
    with pytest.raises(InputError, match="nnU-Net v2 is not installed"):
        NnUNetBackend(tmp_path).segment(image, ("spine",), "ct", "cpu")


def test_dixon_muscle_order(shared_data):
    from spinekit.segment.dataset import dixon_manual_labels, dixon_muscle_order

    manual = dixon_manual_labels(shared_data / "mri_axial_dixon_L2L5")
    order = dixon_muscle_order(manual)
    assert sorted(order.values()) == [3, 3, 4, 4]
    assert read_volume(shared_data / "mri_axial_dixon_L2L5" / "tum01_water.nii.gz").same_grid(manual)


def test_synthesis_settings_default_ranges():
    s = SynthesisSettings()
    assert s.mean_range[0] < s.mean_range[1] and 0 < s.ct_like_fraction < 1


def test_cropped_view_with_sacrum_gets_levels():
    result = assign_instances(toy_spine(2, sacrum=True))
    assert result.levels_known and result.levels == [23, 24, lb.SACRUM]


def test_demo_stage_on_phantom(tmp_path, capsys):
    phantom_module = pytest.importorskip("spinekit.phantom")
    from spinekit.segment.cli import demo
    from spinekit.segment.networks import model_paths

    if not (model_paths("spine")[0].is_file() and model_paths("muscles")[0].is_file()):
        pytest.skip("no shipped models")
    phantom = phantom_module.make_phantom(phantom_module.PhantomConfig(levels="L2-S1", spacing=(2.0, 2.0, 2.0)))
    phantom.write(tmp_path / "phantom")
    written = demo(tmp_path / "work", tmp_path / "phantom")
    assert {p.name for p in written} == {"spine.nii.gz", "muscles.nii.gz", "segment.json"}
    assert "Dice vs phantom truth" in capsys.readouterr().out


def test_ct_synthesis_draws_real_hounsfield_ranges():
    from scipy import ndimage

    from spinekit.segment.synthesis import TISSUES, ct_window, normalise_real, synthesize_ct

    labels = toy_spine().array.astype(np.int32)  # 0 air, 1 vertebra, 2 sacrum, 3 disc, 4 canal
    lut = np.array([TISSUES.index(t) for t in ("air", "bone", "bone", "disc", "fluid")])
    disc_core = ndimage.binary_erosion(labels == 3, iterations=1)
    for seed in range(3):
        image = synthesize_ct(labels, lut, np.random.default_rng(seed), SynthesisSettings())
        assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
        assert image[labels == 0].mean() < ct_window(np.array(-800.0))  # air stays air
        disc = float(image[disc_core].mean())  # disc 50-110 HU, blurred by bone above and below
        assert ct_window(np.array(-50.0)) < disc < ct_window(np.array(400.0))
        assert image[labels == 1].mean() > disc  # bone (cortical shell + trabecular core) above disc
    hu = np.where(labels == 1, 700.0, -1000.0).astype(np.float32)
    assert np.allclose(normalise_real(hu), ct_window(hu))  # real CT: the same fixed window as the synthesis
    mr = np.where(labels == 1, 300.0, 20.0).astype(np.float32)
    assert normalise_real(mr).max() == 1.0 and normalise_real(mr).min() == 0.0  # MRI: percentile normalisation


def test_real_ct_pair_is_aligned(shared_data):
    from spinekit.segment.dataset import FAT_GEN, _ct_dicom
    from spinekit.segment.synthesis import ct_window

    sample = _ct_dicom(shared_data / "ct_dicom_t11_t12", task_config("spine"))
    assert sample.image is not None and sample.image.shape == sample.target.shape
    bone = sample.image[sample.target == 1].mean()  # T11/T12 labels on the DICOM image: bone, not soft tissue
    assert bone > ct_window(np.array(150.0)), bone
    assert sample.image[sample.generation == FAT_GEN].mean() < ct_window(np.array(-30.0))
    assert (sample.target == 4).sum() > 20 and 3 in sample.unknown  # cord present; discs are not labelled there


def _head_ct() -> Volume:
    """A "head": bone-like shell (skull) around a brain-like interior, in HU, 2 mm."""
    k, j, i = np.mgrid[:100, :100, :100] * 2.0
    r = np.sqrt((k - 100) ** 2 + ((j - 100) / 1.2) ** 2 + ((i - 100) / 0.85) ** 2)
    image = np.select([r < 70, r < 73, r < 80, r < 84], [35.0, 8.0, 1100.0, 40.0], -1000.0)
    return Volume((image + np.random.default_rng(0).normal(0, 10, image.shape)).astype(np.float32), (2.0,) * 3)


def _knee_ct() -> Volume:
    """A "knee": tibia and femur as long cortical tubes with fatty marrow along z, an 8 mm joint, muscle and fat."""
    k, j, i = np.mgrid[:150, :80, :80] * 2.0
    rad = np.sqrt((j - 80) ** 2 + (i - 80) ** 2)
    image = np.select([rad < 52, rad < 60], [50.0, -100.0], -1000.0)
    for lo, hi, radius in ((0, 146, 16), (154, 300, 18)):
        shaft = (k >= lo) & (k < hi)
        image[shaft & (rad < radius)] = 1200.0
        image[shaft & (rad < radius - 4)] = -40.0
    image[(k >= 146) & (k < 154) & (rad < 18)] = 90.0
    return Volume((image + np.random.default_rng(0).normal(0, 10, image.shape)).astype(np.float32), (2.0,) * 3)


@pytest.mark.parametrize("make", [_head_ct, _knee_ct], ids=["head", "knee"])
def test_shipped_model_rejects_non_spine_ct(make):
    from spinekit.segment.api import segment_image
    from spinekit.segment.networks import model_paths

    if not model_paths("spine")[0].is_file():
        pytest.skip("no shipped spine model")
    result = segment_image(make())
    assert not result.spine.array.any() and not result.muscles.array.any()
    flags = {f["flag"] for f in result.qc["flags"]}
    assert {"no_spine_found", "no_muscles_found"} <= flags


def test_rod_shaped_bone_is_not_a_vertebra():
    rod = np.zeros((60, 20, 20), bool)
    rod[5:55, 8:12, 8:12] = True  # 100 x 8 x 8 mm at 2 mm
    block = np.zeros((30, 40, 40), bool)
    block[5:20, 5:30, 5:35] = True  # 30 x 50 x 60 mm: a vertebral body with arch
    assert not qc.vertebra_shaped(Volume(rod.astype(np.uint8), (2.0,) * 3), rod)
    assert qc.vertebra_shaped(Volume(block.astype(np.uint8), (2.0,) * 3), block)
    assert qc.principal_extents_mm(Volume(rod.astype(np.uint8), (2.0,) * 3), rod)[0] == pytest.approx(98.0)


def test_muscle_midline_follows_the_back_muscles_per_slice():
    """A scoliotic pair of back muscles: the midline moves with them, so the sides stay right on every slice."""
    classes = np.zeros((3, 4, 30), np.uint8)
    for k, shift in enumerate((0, 6, 12)):
        classes[k, 2:, 5 + shift : 8 + shift] = 4  # erector spinae right of the midline (low x)
        classes[k, 2:, 12 + shift : 15 + shift] = 4  # left
        classes[k, 0, 20] = 1  # a psoas voxel far left of the true midline must not move it
    volume = Volume(classes, (2.0, 2.0, 2.0))
    midline = muscle_midline_x(volume)
    assert np.allclose(midline, [19.0, 31.0, 43.0])
    sides = split_muscle_sides(volume, midline).array
    for k, shift in enumerate((0, 6, 12)):
        assert set(np.unique(sides[k, 2:, 5 + shift : 8 + shift])) == {lb.muscle_label("erector_spinae", "right")}
        assert set(np.unique(sides[k, 2:, 12 + shift : 15 + shift])) == {lb.muscle_label("erector_spinae", "left")}


def test_muscles_without_spine_need_confidence_and_paired_back_muscles():
    muscles = np.zeros((10, 20, 40), np.int16)  # 3 mm voxels: 0.027 cm3 each
    muscles[:, 5:15, 5:15] = lb.muscle_label("erector_spinae", "right")  # 1000 voxels = 27 cm3
    muscles[:, 5:15, 25:35] = lb.muscle_label("erector_spinae", "left")
    volume = Volume(muscles, (3.0,) * 3)
    assert qc.muscles_implausible_without_spine(volume, 0.9) is None
    assert "confidence" in qc.muscles_implausible_without_spine(volume, 0.75)
    one_sided = volume.with_array(np.where(muscles == lb.muscle_label("erector_spinae", "left"), 0, muscles))
    assert "not paired" in qc.muscles_implausible_without_spine(one_sided, 0.9)


def test_noise_is_told_apart_from_anatomy():
    rng = np.random.default_rng(3)
    noise = Volume(rng.normal(0, 1, (40, 40, 40)).astype(np.float32), (1.5,) * 3)
    assert "noise" in qc.noise_only(noise)
    from spinekit.phantom import PhantomConfig, make_phantom

    phantom = make_phantom(PhantomConfig(modality="t2", levels="L3-L5", spacing=(2.0, 2.0, 4.0))).image
    assert qc.noise_only(phantom) is None


def test_every_quality_flag_is_documented():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = "".join(p.read_text() for p in (root / "spinekit" / "segment").glob("*.py"))
    emitted = set(re.findall(r'flag\(\s*"([a-z_0-9A-Z]+)"', code)) | set(re.findall(r'"flag": "([a-z_0-9A-Z]+)"', code))
    documented = set(re.findall(r"^\| `([a-z_0-9A-Z]+)` \|", (root / "docs" / "qc_flags.md").read_text(), re.M))
    assert len(emitted) > 15 and emitted <= documented, emitted - documented
