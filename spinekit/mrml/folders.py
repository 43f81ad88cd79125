"""Subject hierarchy folders: keep the nodes of one result together in Slicer's Data module."""

from __future__ import annotations

from collections.abc import Iterable

import slicer


def put_in_folder(scene: slicer.vtkMRMLScene, nodes: Iterable[slicer.vtkMRMLNode], folder_name: str) -> int:
    """Put ``nodes`` into a subject hierarchy folder named ``folder_name`` (created once at scene level).

    Returns the folder's item ID, or 0 when the scene has no subject hierarchy (then nothing is moved).
    """
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return 0
    scene_item = hierarchy.GetSceneItemID()
    folder = hierarchy.GetItemChildWithName(scene_item, folder_name)
    if not folder:
        folder = hierarchy.CreateFolderItem(scene_item, folder_name)
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if not item:
            item = hierarchy.CreateItem(folder, node)
        hierarchy.SetItemParent(item, folder)
    return folder
