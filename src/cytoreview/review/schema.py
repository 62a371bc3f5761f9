"""The label schema: which classes a reviewer can assign, and the reserved ``UNSURE`` pseudo-class.

A :class:`LabelSchema` is either free-standing (built from a model pack's classes or given) or bound to a
project's :class:`~cytoreview.review.connection.Database`, in which case every change is validated against the
classes as they are *inside* the write transaction (so two processes cannot both add "Lymphocyte") and written
before the call returns. This module is also the only one that reads and writes the ``classes`` table.

Rules for a class:

* ``id`` is an int >= 0 and never changes or gets reused; ``-1`` is reserved for ``UNSURE``.
* ``name`` is any unicode text (NFC-normalised, trimmed), non-empty, without control characters, unique among the
  active classes by :func:`name_key` (ignoring case and runs of white space); "unsure" is reserved.
* ``color`` is ``"#rrggbb"`` or ``"#rrggbbaa"``; ``hotkey`` is one character, unique among active classes; ``"0"`` is
  reserved for ``UNSURE``.
* ``level`` is one of ``field``, ``tile``, ``cell``, ``region``.

Merging class A into B relabels every item that carries A (journalled as a reviewer action ``"merge"``), keeps A's
id in the table but marks it inactive with ``merged_into = B``.

Two class names mean the same class when their :func:`~cytoreview.class_names.name_key` is equal: the one rule
everywhere a name is matched (pack classes against project classes, overlay values, training label sets).

The reserved class :data:`NOT_A_CELL` is what a deleted cell detection becomes (see
:func:`cytoreview.review.edits.delete_cells`): kept as a false positive a refit can learn from. Likewise
:data:`NOT_A_REGION` is what a deleted region becomes (:func:`cytoreview.review.edits.delete_regions`).
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from cytoreview.class_names import name_key
from cytoreview.errors import ProjectError

#: Name, colour and level of the class a deleted cell detection gets (added to a schema on first use).
NOT_A_CELL = "not a cell"
NOT_A_CELL_COLOR = "#202020"

#: Name and colour of the class a deleted region gets (added to a schema on first use, level region).
NOT_A_REGION = "not a region"
NOT_A_REGION_COLOR = "#202020"

#: Levels an item (and a class) can live at.
LEVELS = ("field", "tile", "cell", "region")

#: Id of the reserved "unsure" pseudo-class. Put it in a label (``set_label(item, [UNSURE], ...)``) to say "I cannot
#: tell"; exporters keep such items out of training sets.
UNSURE = -1

_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$")
_MAX_NAME_CHARS = 200
#: Colours given to classes added without one (Okabe-Ito, colour-blind safe, then a few more).
_PALETTE = (
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#000000",
    "#8c564b", "#7f7f7f", "#bcbd22", "#17becf",
)


@dataclass(frozen=True)
class LabelClass:
    """One class a reviewer can assign.

    Attributes
    ----------
    id : int
        Stable id (>= 0; ``-1`` only for ``UNSURE``).
    name : str
        Display name, unique among active classes ignoring case.
    color : str
        ``"#rrggbb"`` or ``"#rrggbbaa"``.
    hotkey : str or None
        One key that assigns the class in the GUI.
    level : str
        ``"field"``, ``"tile"``, ``"cell"`` or ``"region"``.
    active : bool
        False once merged into another class.
    merged_into : int or None
        Id of the class this one was merged into.
    """

    id: int
    name: str
    color: str
    hotkey: str | None = None
    level: str = "tile"
    active: bool = True
    merged_into: int | None = None

    def to_dict(self) -> dict:
        """Return the class as a plain dict (the pack card's class form plus ``active``/``merged_into``)."""
        return {
            "id": self.id, "name": self.name, "color": self.color, "hotkey": self.hotkey, "level": self.level,
            "active": self.active, "merged_into": self.merged_into,
        }


#: The reserved pseudo-class behind ``UNSURE`` (never stored in the classes table, never trained on).
UNSURE_CLASS = LabelClass(id=UNSURE, name="unsure", color="#9e9e9e", hotkey="0", level="field")


def normalise_name(name: object) -> str:
    """Return ``name`` NFC-normalised and trimmed; raise :class:`ProjectError` if it is not a usable class name."""
    if not isinstance(name, str):
        raise ProjectError(f"class name must be text, got {type(name).__name__} {name!r}")
    text = unicodedata.normalize("NFC", name).strip()
    if not text:
        raise ProjectError(f"class name {name!r} is empty once trimmed")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise ProjectError(f"class name {name!r} contains a control character (newline, tab, ...)")
    if len(text) > _MAX_NAME_CHARS:
        raise ProjectError(f"class name {text[:40]!r}... is longer than {_MAX_NAME_CHARS} characters")
    return text


def _check_color(color: object) -> str:
    if not isinstance(color, str) or not _COLOR_RE.match(color):
        raise ProjectError(f"class colour {color!r} is not '#rrggbb' or '#rrggbbaa'")
    return color.lower()


def _check_hotkey(hotkey: object) -> str | None:
    if hotkey is None or hotkey == "":
        return None
    if not isinstance(hotkey, str) or len(hotkey) != 1 or hotkey.isspace():
        raise ProjectError(f"hotkey {hotkey!r} must be a single non-blank character")
    if hotkey == UNSURE_CLASS.hotkey:
        raise ProjectError(f"hotkey {hotkey!r} is reserved for 'unsure'")
    return hotkey


def _check_level(level: object) -> str:
    if level not in LEVELS:
        raise ProjectError(f"class level {level!r} is not one of {', '.join(LEVELS)}")
    return str(level)


class LabelSchema:
    """The set of classes of a project (or a free-standing set before it is stored).

    Parameters
    ----------
    classes : iterable of LabelClass or dict, optional
        Initial classes; dicts take the pack card's form ``{id, name, color, hotkey, level}``.
    backend : Database, optional
        Set by :class:`~cytoreview.review.store.Project`; when present every change is written through it.
    relabel : callable, optional
        ``relabel(connection, {old_id: new_id}, reviewer) -> int``: relabels the items of merged classes inside
        the merge's transaction (the project passes :func:`cytoreview.review.journal.relabel_merged`).
    """

    def __init__(self, classes: Iterable[LabelClass | Mapping] = (), *, backend=None, relabel=None):
        self._backend = backend
        self._relabel = relabel
        self._con = None
        self._data_version = None
        self._classes: dict[int, LabelClass] = {}
        for c in classes:
            cls = c if isinstance(c, LabelClass) else self._from_mapping(c)
            self._validate_new(cls, list(self._classes.values()))
            self._classes[cls.id] = cls

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pack_classes(cls, classes: Iterable[Mapping]) -> LabelSchema:
        """Build a free-standing schema from a pack card's ``classes`` list (dicts with id, name, color, ...)."""
        return cls(classes)

    @classmethod
    def from_stored(cls, classes: Iterable[LabelClass]) -> LabelSchema:
        """A free-standing snapshot of classes already stored in a project (not validated again)."""
        schema = cls()
        schema._classes = {c.id: c for c in classes}
        return schema

    @staticmethod
    def _from_mapping(m: Mapping) -> LabelClass:
        try:
            cid = int(m["id"])
            name = m["name"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProjectError(f"class {dict(m)!r} needs an integer 'id' and a 'name'") from exc
        return LabelClass(
            id=cid, name=name, color=m.get("color") or _PALETTE[cid % len(_PALETTE)],
            hotkey=m.get("hotkey"), level=m.get("level", "tile"), active=bool(m.get("active", True)),
            merged_into=m.get("merged_into"),
        )

    # ------------------------------------------------------------------ reading
    @property
    def classes(self) -> list[LabelClass]:
        """All classes (active and merged), ordered by id."""
        self._refresh()
        return [self._classes[k] for k in sorted(self._classes)]

    @property
    def active_classes(self) -> list[LabelClass]:
        """Classes a reviewer can assign now, ordered by id."""
        return [c for c in self.classes if c.active]

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self):
        return iter(self.classes)

    def get(self, class_id: int) -> LabelClass:
        """Return the class with id ``class_id`` (``UNSURE`` gives :data:`UNSURE_CLASS`)."""
        if class_id == UNSURE:
            return UNSURE_CLASS
        self._refresh()
        try:
            return self._classes[int(class_id)]
        except (KeyError, TypeError, ValueError):
            raise ProjectError(f"no class with id {class_id!r} in the label schema") from None

    def by_name(self, name: str) -> LabelClass:
        """Return the active class called ``name`` (ignoring case); "unsure" gives :data:`UNSURE_CLASS`."""
        key = name_key(name)
        if key == name_key(UNSURE_CLASS.name):
            return UNSURE_CLASS
        for c in self.active_classes:
            if name_key(c.name) == key:
                return c
        raise ProjectError(f"no active class named {name!r} in the label schema")

    def not_a_cell(self, create: bool = False) -> LabelClass | None:
        """The :data:`NOT_A_CELL` class; None when the schema lacks it, unless ``create`` adds it (level cell)."""
        try:
            return self.by_name(NOT_A_CELL)
        except ProjectError:
            if not create:
                return None
        return self.add(NOT_A_CELL, color=NOT_A_CELL_COLOR, level="cell")

    def not_a_region(self, create: bool = False) -> LabelClass | None:
        """The :data:`NOT_A_REGION` class; None when the schema lacks it, unless ``create`` adds it (level region)."""
        try:
            return self.by_name(NOT_A_REGION)
        except ProjectError:
            if not create:
                return None
        return self.add(NOT_A_REGION, color=NOT_A_REGION_COLOR, level="region")

    def by_hotkey(self, hotkey: str) -> LabelClass | None:
        """Return the active class bound to ``hotkey`` ("0" gives :data:`UNSURE_CLASS`), or None."""
        if hotkey == UNSURE_CLASS.hotkey:
            return UNSURE_CLASS
        return next((c for c in self.active_classes if c.hotkey == hotkey), None)

    def resolve(self, class_id: int) -> int:
        """Follow ``merged_into`` links from ``class_id`` to the active class it now means."""
        seen = set()
        cid = int(class_id)
        while cid != UNSURE and cid in self._classes and self._classes[cid].merged_into is not None:
            if cid in seen:
                raise ProjectError(f"class merge chain through id {cid} loops")
            seen.add(cid)
            cid = int(self._classes[cid].merged_into)
        return cid

    def names(self, class_ids: Iterable[int]) -> list[str]:
        """Names of ``class_ids`` in the given order."""
        return [self.get(i).name for i in class_ids]

    def check_assignable(self, class_ids: Iterable[int]) -> list[int]:
        """Return ``class_ids`` as a sorted, de-duplicated list; raise if one is unknown or merged away."""
        out = set()
        for cid in class_ids:
            try:
                cid = int(cid)
            except (TypeError, ValueError):
                raise ProjectError(f"class id {cid!r} is not an integer") from None
            cls = self.get(cid)
            if not cls.active:
                target = self.get(self.resolve(cid))
                raise ProjectError(f"class {cls.name!r} (id {cid}) was merged into {target.name!r} (id {target.id})")
            out.add(cid)
        return sorted(out)

    # ------------------------------------------------------------------ validation
    def _validate_new(self, cls: LabelClass, existing: list[LabelClass]) -> LabelClass:
        if not isinstance(cls.id, int) or cls.id < 0:
            raise ProjectError(f"class id {cls.id!r} must be an integer >= 0 (-1 is reserved for 'unsure')")
        if any(c.id == cls.id for c in existing):
            raise ProjectError(f"class id {cls.id} is already used by {self._name_of(existing, cls.id)!r}")
        cls = replace(cls, name=normalise_name(cls.name), color=_check_color(cls.color),
                      hotkey=_check_hotkey(cls.hotkey), level=_check_level(cls.level))
        if cls.active:
            self._check_unique(cls, existing)
        return cls

    @staticmethod
    def _name_of(existing, cid):
        return next(c.name for c in existing if c.id == cid)

    @staticmethod
    def _check_unique(new: LabelClass, existing: list[LabelClass]) -> None:
        key = name_key(new.name)
        if key == name_key(UNSURE_CLASS.name):
            raise ProjectError(f"class name {new.name!r} is reserved for the 'unsure' pseudo-class")
        for other in existing:
            if other.id == new.id or not other.active:
                continue
            if name_key(other.name) == key:
                raise ProjectError(
                    f"class name {new.name!r} clashes with existing class {other.name!r} (id {other.id}); "
                    "names must be unique ignoring case"
                )
            if new.hotkey is not None and other.hotkey == new.hotkey:
                raise ProjectError(f"hotkey {new.hotkey!r} is already used by class {other.name!r} (id {other.id})")

    # ------------------------------------------------------------------ changes
    def add(self, name: str, *, color: str | None = None, hotkey: str | None = None, level: str = "tile",
            id: int | None = None) -> LabelClass:
        """Add a class and return it (with its new id unless ``id`` is given).

        Raises
        ------
        ProjectError
            If the name is empty/duplicate/reserved, the colour or hotkey is malformed or taken, or the id is used.
        """
        with self._editing() as existing:
            cid = id if id is not None else (max((c.id for c in existing), default=-1) + 1)
            cls = LabelClass(id=cid, name=name, color=color or _PALETTE[cid % len(_PALETTE)], hotkey=hotkey,
                             level=level)
            cls = self._validate_new(cls, existing)
            self._write(cls, new=True)
            return cls

    def rename(self, class_id: int, name: str) -> LabelClass:
        """Rename a class (its id, and so every label carrying it, stays)."""
        with self._editing() as existing:
            cls = replace(self._find(existing, class_id), name=normalise_name(name))
            self._check_unique(cls, existing)
            self._write(cls)
            return cls

    def recolour(self, class_id: int, color: str) -> LabelClass:
        """Give a class a new ``"#rrggbb"`` colour."""
        with self._editing() as existing:
            cls = replace(self._find(existing, class_id), color=_check_color(color))
            self._write(cls)
            return cls

    recolor = recolour

    def set_hotkey(self, class_id: int, hotkey: str | None) -> LabelClass:
        """Bind (or with None unbind) a class's hotkey."""
        with self._editing() as existing:
            cls = replace(self._find(existing, class_id), hotkey=_check_hotkey(hotkey))
            self._check_unique(cls, existing)
            self._write(cls)
            return cls

    def merge(self, source_ids: int | Iterable[int], into_id: int, reviewer: str) -> int:
        """Merge classes ``source_ids`` into ``into_id``.

        Every item labelled with a source class is relabelled (one journal row per item, action ``"merge"``, by
        ``reviewer``); the source classes stay in the table, inactive, with ``merged_into = into_id``.

        Returns
        -------
        int
            The number of items relabelled (0 for a free-standing schema).
        """
        sources = [int(source_ids)] if isinstance(source_ids, int) else [int(s) for s in source_ids]
        if not sources:
            raise ProjectError("merge needs at least one source class")
        with self._editing() as existing:
            target = self._find(existing, into_id)
            if not target.active:
                raise ProjectError(f"cannot merge into inactive class {target.name!r} (id {target.id})")
            merged = []
            for sid in sources:
                src = self._find(existing, sid)
                if sid == into_id:
                    raise ProjectError(f"cannot merge class {src.name!r} (id {sid}) into itself")
                if not src.active:
                    raise ProjectError(f"class {src.name!r} (id {sid}) was already merged")
                merged.append(replace(src, active=False, merged_into=target.id, hotkey=None))
            for cls in merged:
                self._write(cls)
            mapping = {cls.id: target.id for cls in merged}
            if self._backend is None or self._relabel is None:
                return 0
            return self._relabel(self._con, mapping, reviewer)

    # ------------------------------------------------------------------ persistence plumbing
    def adopt(self, pack_classes: Iterable[Mapping], origin: str = "pack classes") -> dict[int, int]:
        """Make a model pack's classes available: match them by name (ignoring case), add the missing ones.

        Returns
        -------
        dict of {int: int}
            Pack class id -> project class id (a pack class matching a merged-away class maps to its target).
        """
        pack_classes = list(pack_classes)
        if self._backend is None:
            raise ProjectError("adopt() needs a schema bound to a project; build a free-standing one with "
                               "LabelSchema.from_pack_classes()")
        with self._editing():
            return map_pack_classes(self._con, pack_classes, origin)

    def _find(self, existing: list[LabelClass], class_id: int) -> LabelClass:
        for c in existing:
            if c.id == class_id:
                return c
        raise ProjectError(f"no class with id {class_id!r} in the label schema")

    def _editing(self):
        """Context: yields the current classes (re-read inside the write transaction when bound)."""
        schema = self

        class _Edit:
            def __enter__(self_inner):
                if schema._backend is None:
                    schema._con = None
                    return list(schema._classes.values())
                self_inner._tx = schema._backend.write()
                schema._con = self_inner._tx.__enter__()
                schema._classes = {c.id: c for c in load_classes(schema._con)}
                return list(schema._classes.values())

            def __exit__(self_inner, *exc):
                if schema._backend is None:
                    return False
                try:
                    return self_inner._tx.__exit__(*exc)
                finally:
                    schema._con = None
                    schema.refresh()

        return _Edit()

    def _write(self, cls: LabelClass, new: bool = False) -> None:
        self._classes[cls.id] = cls
        if self._con is not None:
            save_class(self._con, cls, new=new)

    def refresh(self) -> None:
        """Re-read the classes from the project (after classes were added through another path, e.g. an import)."""
        if self._backend is not None:
            self._data_version = self._backend.data_version()
            self._classes = {c.id: c for c in self._backend.read(load_classes)}

    def _refresh(self) -> None:
        """Re-read the classes when another connection may have committed since they were last read."""
        if self._backend is None:
            return
        version = self._backend.data_version()
        if version != self._data_version:
            self._data_version = version
            self._classes = {c.id: c for c in self._backend.read(load_classes)}


# ---------------------------------------------------------------------- the classes table


def load_classes(con: sqlite3.Connection) -> list[LabelClass]:
    """Read every class from the ``classes`` table."""
    rows = con.execute("SELECT id, name, color, hotkey, level, active, merged_into FROM classes ORDER BY id")
    return [LabelClass(id=r[0], name=r[1], color=r[2], hotkey=r[3], level=r[4], active=bool(r[5]),
                       merged_into=r[6]) for r in rows]


def save_class(con: sqlite3.Connection, cls: LabelClass, new: bool = False) -> None:
    """Insert (``new``) or update one class row."""
    values = (cls.name, name_key(cls.name), cls.color, cls.hotkey, cls.level, int(cls.active), cls.merged_into)
    if new:
        con.execute("INSERT INTO classes (name, name_key, color, hotkey, level, active, merged_into, id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*values, cls.id))
    else:
        con.execute("UPDATE classes SET name=?, name_key=?, color=?, hotkey=?, level=?, active=?, merged_into=?, "
                    "updated_at=strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id=?", (*values, cls.id))


def map_pack_classes(con: sqlite3.Connection, pack_classes, origin: str) -> dict[int, int]:
    """Map pack class ids to project class ids by name, adding the classes the project does not have yet."""
    existing = load_classes(con)
    schema = LabelSchema(existing)
    mapping: dict[int, int] = {}
    for c in pack_classes:
        try:
            pid, name = int(c["id"]), c["name"]
        except (KeyError, TypeError, ValueError):
            raise ProjectError(f"{origin}: class entry {c!r} needs 'id' and 'name'") from None
        key = name_key(name)
        match = next((e for e in existing if e.active and name_key(e.name) == key), None)
        if match is None:
            match = next((e for e in existing if name_key(e.name) == key), None)
        if match is not None:
            mapping[pid] = schema.resolve(match.id)
            continue
        used_ids = {e.id for e in existing}
        used_keys = {e.hotkey for e in existing if e.active}
        cid = pid if pid not in used_ids and pid >= 0 else max(used_ids, default=-1) + 1
        hotkey = c.get("hotkey")
        cls = LabelClass(id=cid, name=str(name), color=c.get("color") or "#808080",
                         hotkey=None if hotkey in used_keys or hotkey == "0" else hotkey,
                         level=c.get("level", "tile"))
        cls = schema._validate_new(cls, existing)
        save_class(con, cls, new=True)
        existing.append(cls)
        schema = LabelSchema(existing)
        mapping[pid] = cid
    return mapping

