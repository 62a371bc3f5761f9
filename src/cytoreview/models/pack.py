"""Model packs: a folder with ``cytoreview.yaml`` and one ONNX file; finding and loading them.

Only ONNX files are ever loaded. Pickled formats (``.pt``, ``.pkl``, ``.joblib`` ...) can run arbitrary code when
opened, so a pack that offers one is refused with a message saying to export it to ONNX.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cytoreview.errors import PackError
from cytoreview.models.card import CARD_FILENAME, classes_from_metadata, load_card

#: Environment variable with extra pack folders, separated by ``os.pathsep``.
MODEL_PATH_ENV = "CYTOREVIEW_MODEL_PATH"

#: File name of the model inside a pack unless the card's ``model_file`` says otherwise.
DEFAULT_MODEL_FILE = "model.onnx"

#: Model formats that are refused (they can execute code when loaded, or are not ONNX).
REFUSED_SUFFIXES = (
    ".pt",
    ".pth",
    ".pkl",
    ".pickle",
    ".joblib",
    ".ckpt",
    ".h5",
    ".keras",
    ".pb",
    ".safetensors",
    ".bin",
)


class PackWarning(UserWarning):
    """A pack found during discovery was skipped because it is invalid."""


def _version_key(version: str) -> tuple:
    """Sort key for versions like ``1.10.0`` > ``1.9.2`` (numeric parts compare as numbers)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.+-]", version))


@dataclass
class ModelPack:
    """A validated model pack.

    Attributes
    ----------
    card : dict
        The validated card (defaults filled in).
    classes : list of dict
        ``{id, name, color, hotkey, level}`` per class, sorted by id (from the card, else the ONNX metadata).
    path : Path
        The pack folder.
    onnx_path : Path
        The ONNX model file.
    """

    card: dict[str, Any]
    classes: list[dict[str, Any]]
    path: Path
    onnx_path: Path
    _sha256: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """Pack name (``[a-z0-9-]+``)."""
        return self.card["name"]

    @property
    def version(self) -> str:
        """Pack version string."""
        return self.card["version"]

    @property
    def task(self) -> str:
        """``"tile-classification"``, ``"segmentation"`` or ``"cell-classification"``."""
        return self.card["task"]

    @property
    def ref(self) -> str:
        """``name@version``, as stores and projects name a pack."""
        return f"{self.name}@{self.version}"

    @property
    def mpp(self) -> float:
        """Micrometres per pixel the model expects."""
        return float(self.card["input"]["mpp"])

    @property
    def size_px(self) -> int:
        """Input patch side in pixels (at :attr:`mpp`)."""
        return int(self.card["input"]["size_px"])

    @property
    def halo_px(self) -> int:
        """Pixels lost per side by valid padding (segmentation), 0 otherwise."""
        return int(self.card["outputs"].get("halo_px", 0))

    @property
    def card_path(self) -> Path:
        """The ``cytoreview.yaml`` file."""
        return self.path / CARD_FILENAME

    @property
    def sha256(self) -> str:
        """SHA-256 of the ONNX file (computed once)."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            with open(self.onnx_path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            self._sha256 = digest.hexdigest()
        return self._sha256

    def session(self, providers=None, threads: int | None = None):
        """Open an onnxruntime session checked against this card (a :class:`~cytoreview.models.session.PackSession`)."""
        from cytoreview.models.session import PackSession

        return PackSession(self, providers=providers, threads=threads)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly one-line description (what ``cytoreview models`` prints)."""
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "classes": [c["name"] for c in self.classes],
            "mpp": self.mpp,
            "size_px": self.size_px,
            "path": str(self.path),
        }


def resolve_in_pack(folder: Path, name: str, key: str, card_path: Path) -> Path:
    """Resolve a file the card names (``model_file``, ...) and refuse it unless it lies inside the pack folder.

    Absolute paths, ``..`` and symbolic links that lead out of the folder are refused, so a card can never make
    cytoreview load a file from elsewhere on disk.

    Raises
    ------
    PackError
        Naming the card, the key and the offending path.
    """
    root = Path(folder).resolve()
    declared = Path(name)
    if declared.is_absolute() or declared.drive:
        raise PackError(f"{card_path}: {key}: {name!r} is an absolute path; name a file inside the pack folder")
    resolved = (root / declared).resolve()
    if resolved != root and root not in resolved.parents:
        raise PackError(f"{card_path}: {key}: {name!r} resolves to {resolved}, outside the pack folder {root}")
    return resolved


def _onnx_file(folder: Path, card: dict, card_path: Path) -> Path:
    """The pack's ONNX file (inside the pack folder, links included); refuses non-ONNX model files."""
    declared = card.get("model_file")
    if declared:
        path = resolve_in_pack(folder, declared, "model_file", card_path)
        if not path.is_file():
            raise PackError(f"{card_path}: model_file: {declared!r} does not exist in {folder}")
        return path
    default = folder / DEFAULT_MODEL_FILE
    if default.is_file():
        return resolve_in_pack(folder, DEFAULT_MODEL_FILE, "model file", card_path)
    onnx_files = sorted(folder.glob("*.onnx"))
    if len(onnx_files) == 1:
        return resolve_in_pack(folder, onnx_files[0].name, "model file", card_path)
    if len(onnx_files) > 1:
        names = ", ".join(p.name for p in onnx_files)
        raise PackError(f"{card_path}: several ONNX files ({names}); name one with the card key model_file")
    refused = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in REFUSED_SUFFIXES)
    if refused:
        raise PackError(
            f"{folder}: only ONNX models are loaded; found {', '.join(refused)} "
            "(export the model to ONNX: pickled/PyTorch files can run code when opened)"
        )
    raise PackError(f"{folder}: no model.onnx in this pack")


def _read_onnx_metadata(onnx_path: Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file, read through onnxruntime (no ``onnx`` dependency)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
        raise PackError(f"{onnx_path}: not a valid ONNX model: {exc}".replace("\n", " ")) from None
    return dict(sess.get_modelmeta().custom_metadata_map)


def _load_folder(folder: Path) -> ModelPack:
    card_path = folder / CARD_FILENAME
    card = load_card(card_path)
    onnx_path = _onnx_file(folder, card, card_path)
    classes = card.get("classes")
    if classes is None:
        key = card.get("classes_from_metadata", "classes")
        classes = classes_from_metadata(_read_onnx_metadata(onnx_path), card["task"], onnx_path, key=key)
        if classes is None:
            where = "classes_from_metadata" if "classes_from_metadata" in card else "classes"
            raise PackError(
                f"{card_path}: {where}: missing, and {onnx_path.name} has no {key!r} entry in its metadata_props"
            )
    return ModelPack(card=card, classes=classes, path=folder.resolve(), onnx_path=onnx_path.resolve())


def pack_search_dirs(extra_dirs: Iterable[str | Path] = ()) -> list[Path]:
    """Folders searched for packs: bundled ``plugins/``, ``$CYTOREVIEW_MODEL_PATH``, then ``extra_dirs``."""
    from cytoreview._paths import bundled_dir

    dirs = [bundled_dir("plugins")]
    env = os.environ.get(MODEL_PATH_ENV, "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p.strip()]
    dirs += [Path(p) for p in extra_dirs]
    return dirs


def find_packs(extra_dirs: Iterable[str | Path] = (), errors: list[str] | None = None) -> list[ModelPack]:
    """Find every valid pack.

    Parameters
    ----------
    extra_dirs : iterable of str or Path
        More folders to search, after the bundled ``plugins/`` and ``$CYTOREVIEW_MODEL_PATH``. A folder may be a
        pack itself or contain pack folders.
    errors : list of str, optional
        Invalid packs are skipped; their messages are appended here, or issued as :class:`PackWarning` when None.

    Returns
    -------
    list of ModelPack
        Sorted by name, then version (newest last); one entry per pack folder.
    """
    packs: list[ModelPack] = []
    seen: set[Path] = set()
    for root in pack_search_dirs(extra_dirs):
        if not root.is_dir():
            continue
        candidates = [root] if (root / CARD_FILENAME).is_file() else sorted(p for p in root.iterdir() if p.is_dir())
        for folder in candidates:
            if not (folder / CARD_FILENAME).is_file():
                continue
            key = folder.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                packs.append(_load_folder(folder))
            except PackError as exc:
                if errors is None:
                    warnings.warn(f"skipped model pack: {exc}", PackWarning, stacklevel=2)
                else:
                    errors.append(str(exc))
    return sorted(packs, key=lambda p: (p.name, _version_key(p.version)))


def load_pack(name_or_path: str | Path | ModelPack, extra_dirs: Iterable[str | Path] = ()) -> ModelPack:
    """Load a pack by folder, card or ONNX path, or by ``name`` / ``name@version`` among :func:`find_packs`.

    Parameters
    ----------
    name_or_path : str, Path or ModelPack
        A pack folder, its ``cytoreview.yaml``, the ONNX file inside it, or a pack name (newest version wins)
        or ``name@version``. A ModelPack is returned as is.
    extra_dirs : iterable of str or Path
        More folders to search by name.

    Raises
    ------
    PackError
        When nothing matches, the pack is invalid, or the file is not an ONNX model.
    """
    if isinstance(name_or_path, ModelPack):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if path.suffix.lower() in REFUSED_SUFFIXES:
        raise PackError(
            f"{path}: only ONNX models are loaded, not {path.suffix} files "
            "(export the model to ONNX: pickled/PyTorch files can run code when opened)"
        )
    if path.exists():
        if path.is_dir():
            if not (path / CARD_FILENAME).is_file():
                raise PackError(f"{path}: not a model pack (no {CARD_FILENAME})")
            return _load_folder(path)
        if path.name == CARD_FILENAME:
            return _load_folder(path.parent)
        if path.suffix.lower() == ".onnx":
            pack = _load_folder(path.parent)
            if pack.onnx_path != path.resolve():
                raise PackError(f"{path}: the card beside it names {pack.onnx_path.name}, not this file")
            return pack
        raise PackError(f"{path}: not a model pack (expected a folder, {CARD_FILENAME} or an .onnx file)")
    if os.sep in text or text.endswith((".onnx", ".yaml", ".yml")):
        raise PackError(f"{path}: no such model pack")
    name, _, version = text.partition("@")
    packs = find_packs(extra_dirs, errors=[])
    matches = [p for p in packs if p.name == name and (not version or p.version == version)]
    if not matches:
        known = ", ".join(sorted({p.ref for p in packs})) or "none found"
        raise PackError(f"no model pack named {text!r} (available: {known})")
    return matches[-1]
