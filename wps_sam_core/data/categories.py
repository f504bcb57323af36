"""CategoryMap: the ONE place where dataset category ids become contiguous class indices.

Convention used everywhere downstream:
  * index  0..C-1  — position of the category in ascending category-id order (0-based, for tensors);
  * label  index+1 — the value in label maps and the model's class id (0 = background);
  * class_names[index] — the category's name (so label k is class_names[k - 1]);
  * object_classes[index] — the object class the part belongs to (the class-to-object table): the COCO
    category's `supercategory` (PartImageNet, the procedural world), else derived from the name
    ("mug_handle" -> "mug"; postprocess/objects.py, where a one-word name gives "unknown").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import WpsSamError
from ..postprocess.objects import derive_object_classes, object_class_from_name


@dataclass(frozen=True)
class CategoryMap:
    category_ids: tuple[int, ...]  # ascending; position = class index
    class_names: tuple[str, ...]
    object_classes: tuple[str, ...] = ()  # one per class; () = derived from the names

    def __post_init__(self) -> None:
        if len(self.category_ids) != len(self.class_names):
            raise WpsSamError(f"{len(self.category_ids)} category ids for {len(self.class_names)} names")
        if not self.object_classes:
            object.__setattr__(self, "object_classes", derive_object_classes(self.class_names))
        if len(self.object_classes) != len(self.class_names):
            raise WpsSamError(f"{len(self.object_classes)} object classes for {len(self.class_names)} names")
        if list(self.category_ids) != sorted(set(self.category_ids)):
            raise WpsSamError(f"category ids must be unique and ascending, got {list(self.category_ids)}")
        if len(set(self.class_names)) != len(self.class_names):
            dupes = sorted({n for n in self.class_names if self.class_names.count(n) > 1})
            raise WpsSamError(f"duplicate category names {dupes}")
        # a plain dict built once; tuples/dicts keep the map picklable for DataLoader workers
        object.__setattr__(self, "_index_by_id", {cid: i for i, cid in enumerate(self.category_ids)})

    @classmethod
    def from_coco(cls, categories: Sequence[Mapping[str, Any]], source: str = "annotations") -> "CategoryMap":
        """Build from a COCO `categories` list (any order); `source` names the file in errors."""
        if not isinstance(categories, (list, tuple)) or not categories:
            raise WpsSamError(f"{source}: 'categories' must be a non-empty list")
        pairs: dict[int, str] = {}
        objects: dict[int, str] = {}
        for position, cat in enumerate(categories):
            if not isinstance(cat, Mapping) or "id" not in cat or "name" not in cat:
                raise WpsSamError(f"{source}: category #{position} needs 'id' and 'name'")
            cid, name = cat["id"], cat["name"]
            if not isinstance(cid, int) or isinstance(cid, bool) or not isinstance(name, str) or not name:
                raise WpsSamError(f"{source}: category #{position} has a bad id {cid!r} or name {name!r}")
            if cid in pairs:
                raise WpsSamError(f"{source}: category id {cid} appears twice")
            pairs[cid] = name
            objects[cid] = cat.get("supercategory") or object_class_from_name(name)
            if not isinstance(objects[cid], str):
                raise WpsSamError(f"{source}: category #{position} has a bad supercategory {objects[cid]!r}")
        ids = sorted(pairs)
        try:
            return cls(tuple(ids), tuple(pairs[i] for i in ids), tuple(objects[i] for i in ids))
        except WpsSamError as exc:
            raise WpsSamError(f"{source}: {exc}") from None

    @classmethod
    def from_names(cls, class_names: Sequence[str]) -> "CategoryMap":
        """Categories 1..C named in order (label k = category id k)."""
        return cls(tuple(range(1, len(class_names) + 1)), tuple(class_names))

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.category_ids)

    def __contains__(self, category_id: object) -> bool:
        return category_id in self._index_by_id  # type: ignore[attr-defined]

    def index_of(self, category_id: int) -> int:
        """0-based class index of a category id; WpsSamError if unknown."""
        try:
            return self._index_by_id[category_id]  # type: ignore[attr-defined]
        except (KeyError, TypeError):
            raise WpsSamError(f"unknown category id {category_id!r}; known: {list(self.category_ids)}") from None

    def label_of(self, category_id: int) -> int:
        """Label-map value / model class id (index + 1; 0 is background)."""
        return self.index_of(category_id) + 1

    def name_of_index(self, index: int) -> str:
        return self.class_names[index]

    def to_coco(self) -> list[dict[str, Any]]:
        return [{"id": cid, "name": name, "supercategory": obj}
                for cid, name, obj in zip(self.category_ids, self.class_names, self.object_classes)]
