"""Click corrections on a real MRML scene (slicer-core): RAS clicks, LPS session, one segment changed, undo/redo."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the MRML layer needs the slicer-core wheel (pip install slicer-core)")

from spinekit.mrml import labels_to_segmentation_node, new_scene, volume_to_node  # noqa: E402
from spinekit.mrml.geometry import lps_to_ras  # noqa: E402
from spinekit.mrml.interactive import SegmentEditorSession, segmentation_kind  # noqa: E402
from spinekit.mrml.segmentations import segment_mask  # noqa: E402
from spinekit.phantom import PhantomConfig, make_phantom  # noqa: E402
from spinekit.segment.clicks import break_remove_slab  # noqa: E402

L3 = 22


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomConfig(levels="L2-L4", spacing=(2.0, 2.0, 2.0), field_of_view="spine"))


@pytest.fixture()
def damaged(phantom):
    """The phantom's spine map with a 12 mm slab cut out of L3, as a scene with volume and segmentation nodes."""
    truth = phantom.spine
    axis = np.asarray(phantom.truth["vertebrae"]["L3"]["superior_axis_lps"])
    broken = break_remove_slab(truth, L3, axis, thickness_mm=12.0)
    assert np.count_nonzero(broken.array == L3) < np.count_nonzero(truth.array == L3)
    scene = new_scene()
    volume = volume_to_node(phantom.image, scene, "ct")
    segmentation = labels_to_segmentation_node(broken, scene, "spine", "spine")
    return scene, volume, segmentation, broken


def _masks(node, reference):
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    return {sid: segment_mask(node, sid, reference) for sid in ids}


def test_positive_click_in_ras_repairs_only_the_clicked_segment(phantom, damaged):
    scene, volume, segmentation, broken = damaged
    truth_l3 = phantom.spine.array == L3
    missing = truth_l3 & (broken.array != L3)
    # The L3 body centre (inside the cut slab), given as an LPS point, placed by the user in RAS.
    point_lps = np.asarray(phantom.truth["vertebrae"]["L3"]["body_centroid_lps"], dtype=float)
    i, j, k = np.rint(phantom.image.lps_to_index(point_lps)).astype(int)
    assert missing[k, j, i]
    point_ras = lps_to_ras(point_lps)
    np.testing.assert_allclose(point_ras, [-point_lps[0], -point_lps[1], point_lps[2]])

    editor = SegmentEditorSession(volume, segmentation)
    assert editor.kind == "spine" and segmentation_kind(segmentation) == "spine"
    assert editor.structure_of("L3") == L3
    before = _masks(segmentation, phantom.image)
    result = editor.add_click(point_ras, "L3", positive=True)

    # The session received the LPS point (not the RAS one) and the L3 label.
    np.testing.assert_allclose(result.click.point_lps, point_lps, atol=1e-9)
    assert result.click.structure == L3 and result.click.positive
    assert result.added > 0 and result.removed == 0 and result.seconds > 0
    after = _masks(segmentation, phantom.image)
    l3 = after["L3"]
    # The clicked segment changed in place: most of the cut slab is back (image-driven growth recovers ~77 %
    # here), and nothing outside the true L3 was added.
    assert np.count_nonzero(l3 & missing) > 0.6 * np.count_nonzero(missing)
    assert not np.any(l3 & ~truth_l3)
    np.testing.assert_array_equal(l3, editor.session.labels.array == L3)
    for sid, mask in before.items():
        if sid != "L3":
            np.testing.assert_array_equal(after[sid], mask, err_msg=sid)  # bit-identical

    assert editor.can_undo and editor.undo()
    np.testing.assert_array_equal(segment_mask(segmentation, "L3", phantom.image), before["L3"])
    assert editor.can_redo and editor.redo()
    np.testing.assert_array_equal(segment_mask(segmentation, "L3", phantom.image), l3)


def test_negative_click_removes_and_save_writes_training_case(phantom, damaged, tmp_path):
    scene, volume, segmentation, broken = damaged
    editor = SegmentEditorSession(volume, segmentation)
    centroid = np.asarray(phantom.truth["vertebrae"]["L4"]["body_centroid_lps"])
    before = _masks(segmentation, phantom.image)
    result = editor.add_click(lps_to_ras(centroid), "L4", positive=False)
    assert result.removed > 0 and result.added == 0
    after = _masks(segmentation, phantom.image)
    assert np.count_nonzero(after["L4"]) == np.count_nonzero(before["L4"]) - result.removed
    assert not np.any(after["L4"] & ~before["L4"])
    for sid in before:
        if sid != "L4":
            np.testing.assert_array_equal(after[sid], before[sid], err_msg=sid)
    folder = editor.save(tmp_path / "case")
    from spinekit.segment.corrections import load_correction

    record = load_correction(folder)
    assert record.task == "spine" and len(record.clicks) == 1 and not record.clicks[0].positive
    np.testing.assert_array_equal(record.labels.array, editor.session.labels.array)


def test_click_outside_the_image_is_refused(damaged):
    from spinekit.errors import InputError

    scene, volume, segmentation, _ = damaged
    editor = SegmentEditorSession(volume, segmentation)
    with pytest.raises(InputError, match="outside the image"):
        editor.add_click((1e4, 1e4, 1e4), "L3")
    assert not editor.can_undo
