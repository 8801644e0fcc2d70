"""Dataset YAML files (the Ultralytics ``data.yaml`` form), for YOLO-format and COCO-format datasets alike.

A YOLO split names image folders, ``.txt`` image lists or images (a string or a list); a COCO split is a mapping
``{json: annotations.json, images: folder}``. Relative paths are relative to ``path`` (itself relative to the YAML
file's folder, or to the working directory, default: the YAML file's folder)::

    path: ../datasets/shapes        # dataset root
    train: images/train             # YOLO: labels in labels/train
    val: [images/val, extra.txt]
    test: {json: annotations/test.json, images: images/test}   # COCO
    names: {0: square, 1: disc}     # or a list; required for YOLO splits

Example:
    >>> import tempfile
    >>> from sparseinst_zoo.data.synthetic import make_shapes_yolo_dataset
    >>> spec = load_dataset_spec(make_shapes_yolo_dataset(tempfile.mkdtemp(), "val", num_images=2))
    >>> val = build_dataset(spec, "val", keep_crowd=True)
    >>> type(val).__name__, len(val.images)
    ('YoloInstances', 2)
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from ..errors import Argument, DataError
from .coco import CocoInstances, parse_integer
from .instances import InstanceSet
from .yolo import YoloInstances

__all__ = [
    "SPLITS",
    "DatasetSpec",
    "SplitSpec",
    "is_dataset_yaml",
    "load_dataset_spec",
    "build_dataset",
    "load_instances",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
_KNOWN_KEYS: tuple[str, ...] = ("path", *SPLITS, "names", "nc")
# Keys of the Ultralytics format (and of Roboflow's exports of it) that mean nothing here: read without a word.
_FOREIGN_KEYS: frozenset[str] = frozenset({"download", "kpt_shape", "flip_idx", "channels", "yaml_file", "roboflow"})
_logger = logging.getLogger("sparseinst_zoo")
_warned: set[tuple[str, tuple[str, ...]]] = set()


@dataclass(frozen=True)
class SplitSpec:
    """One split of a dataset YAML: ``kind`` ``'yolo'`` with image ``sources``, or ``'coco'`` with ``json`` and
    ``images`` (absolute paths)."""

    name: str
    kind: Literal["yolo", "coco"]
    sources: tuple[str, ...] = ()
    json: str = ""
    images: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset YAML: where it is, its root folder, class names and splits."""

    path: str
    root: str
    names: dict[int, str] | None
    splits: dict[str, SplitSpec]

    def split(self, name: str) -> SplitSpec:
        """The split called ``name``, or a DataError listing the ones the file has."""
        if name not in self.splits:
            raise DataError(f"{self.path} has no '{name}' split (it has {sorted(self.splits)}); add '{name}: ...'")
        return self.splits[name]


def is_dataset_yaml(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a dataset YAML file (by its suffix)."""
    return os.fspath(path).lower().endswith((".yaml", ".yml"))


def _read_yaml(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset YAML file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save the YAML file as UTF-8") from None
    except yaml.YAMLError as err:
        raise DataError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    except (ValueError, RecursionError) as err:  # a value YAML cannot build, e.g. the date 2024-13-01 or !!int x
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"{path} holds a value YAML cannot read ({reason}); quote it to make it a string") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise DataError(f"{path}: a dataset YAML file is a mapping with train/val/names keys, got {kind}")
    return data


def _check_keys(data: dict[str, Any], path: str) -> None:
    """A DataError for a key that looks like a misspelled known one; a warning (once per file) for other strangers."""
    unknown = [str(key) for key in data if str(key) not in _KNOWN_KEYS and str(key) not in _FOREIGN_KEYS]
    for key in unknown:
        match = difflib.get_close_matches(key.lower(), _KNOWN_KEYS, n=1, cutoff=0.75)
        if match:
            raise DataError(
                f"unknown key '{key}' in {path}; did you mean '{match[0]}'? known keys: {', '.join(_KNOWN_KEYS)}"
            )
    warned = (os.path.abspath(path), tuple(unknown))
    if unknown and warned not in _warned:
        _warned.add(warned)
        _logger.warning(
            "%s: ignoring unknown key%s %s (known keys: %s)",
            path,
            "s" if len(unknown) > 1 else "",
            ", ".join(f"'{key}'" for key in unknown),
            ", ".join(_KNOWN_KEYS),
        )


def _parse_names(data: dict[str, Any], path: str) -> dict[int, str] | None:
    names = data.get("names")
    if names is None:
        return None
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise DataError(f"{path}: 'names' must be a non-empty list of class names or a mapping index: name")
    parsed: dict[int, str] = {}
    for key, name in names.items():
        index = parse_integer(key)
        if index is None or index < 0 or not isinstance(name, (str, int)):
            raise DataError(f"{path}: 'names' entry {key!r}: {name!r} must map a class index >= 0 to a name")
        parsed[index] = str(name)
    count = data.get("nc")
    if count is not None and parse_integer(count) != len(parsed):
        raise DataError(f"{path}: nc is {count!r} but 'names' lists {len(parsed)} classes")
    return parsed


def _names_from_count(count: Any, path: str) -> dict[int, str]:
    """``class_0``, ``class_1``, ... for a file giving ``nc`` without ``names``, as Ultralytics names them."""
    if count is None:
        raise DataError(f"{path}: YOLO-format splits need 'names' (a list of class names or index: name) or 'nc'")
    number = parse_integer(count)
    if number is None or number < 1:
        raise DataError(f"{path}: nc must be a number of classes >= 1, got {count!r}")
    return {index: f"class_{index}" for index in range(number)}


def _resolve_root(data: dict[str, Any], path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    root = data.get("path")
    if root is None:
        return folder
    if not isinstance(root, str):
        raise DataError(f"{path}: 'path' must be a folder name, got {root!r}")
    root = os.path.expanduser(root)
    candidates = [root] if os.path.isabs(root) else [os.path.join(folder, root), os.path.abspath(root)]
    for candidate in candidates:
        if os.path.isdir(candidate):
            return os.path.normpath(candidate)
    raise FileNotFoundError(f"{path}: dataset folder 'path: {data['path']}' not found (looked in {candidates})")


def _parse_split(name: str, value: Any, root: str, path: str) -> SplitSpec:
    where = f"{path}: split '{name}'"
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"json", "images"})
        if unknown or not isinstance(value.get("json"), str) or not isinstance(value.get("images"), str):
            raise DataError(f"{where}: a COCO split is {{json: annotations.json, images: folder}}, got {value!r}")
        json_path, image_dir = (os.path.join(root, os.path.expanduser(value[key])) for key in ("json", "images"))
        return SplitSpec(name, "coco", json=json_path, images=image_dir)
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list) or not entries or not all(isinstance(e, str) for e in entries):
        raise DataError(
            f"{where}: expected an image folder, a .txt image list, a list of them, or "
            f"{{json: ..., images: ...}} for COCO, got {value!r}"
        )
    return SplitSpec(name, "yolo", sources=tuple(_yolo_source(root, entry) for entry in entries))


def _yolo_source(root: str, entry: str) -> str:
    """A YOLO split entry joined to the root; a missing ``../x`` is looked up as ``x``, as Ultralytics does (Roboflow
    writes ``train: ../train/images`` next to ``train/``)."""
    entry = os.path.expanduser(entry)
    joined = os.path.join(root, entry)
    if not os.path.exists(joined) and entry.startswith("../"):
        return os.path.join(root, entry[3:])
    return joined


def load_dataset_spec(path: str | os.PathLike[str]) -> DatasetSpec:
    """Parse and check a dataset YAML file (see the module docstring for the format).

    Keys other than ``path``, the splits, ``names`` and ``nc`` are ignored (with a warning, except the Ultralytics
    ones such as ``download``), unless they look like a misspelled known key.

    Raises:
        FileNotFoundError: if the file or its dataset folder does not exist.
        DataError: for a malformed file or a misspelled key (``vall:``), naming it and the key.
    """
    path = os.fspath(path)
    data = _read_yaml(path)
    _check_keys(data, path)
    names = _parse_names(data, path)
    root = _resolve_root(data, path)
    splits = {name: _parse_split(name, data[name], root, path) for name in SPLITS if data.get(name) is not None}
    if not splits:
        raise DataError(f"{path} names no split; add at least 'train: ...' or 'val: ...' (image folders or lists)")
    if names is None and any(split.kind == "yolo" for split in splits.values()):
        names = _names_from_count(data.get("nc"), path)
    return DatasetSpec(path, root, names, splits)


def build_dataset(spec: DatasetSpec, split: str, keep_crowd: bool = False) -> InstanceSet:
    """The validated dataset of one split (a :class:`CocoInstances` or a :class:`YoloInstances`).

    ``keep_crowd`` keeps COCO crowd annotations (for evaluation; training drops them). For a COCO split with
    ``names`` in the YAML file, the names must be the JSON's categories.
    """
    entry = spec.split(split)
    if entry.kind == "yolo":
        assert spec.names is not None
        return YoloInstances(entry.sources, spec.names, f"{spec.path} ({split})", root=spec.root)
    dataset = CocoInstances(entry.json, entry.images, keep_crowd=keep_crowd)
    if spec.names is not None and sorted(spec.names.values()) != sorted(dataset.label_names):
        raise DataError(
            f"{spec.path}: 'names' {sorted(spec.names.values())} differ from the categories of "
            f"{entry.json} {sorted(dataset.label_names)}; remove 'names' or make them agree"
        )
    return dataset


def load_instances(
    data: str | os.PathLike[str],
    images: str | os.PathLike[str] | None = None,
    *,
    split: str = "val",
    keep_crowd: bool = False,
) -> InstanceSet:
    """One entry point for both kinds: a dataset YAML (and a ``split``), or a COCO JSON with its image folder.

    Raises:
        DataError: for a COCO JSON without ``images`` or a YAML file with ``images``.
    """
    if is_dataset_yaml(data):
        if images is not None:
            raise DataError(f"{os.fspath(data)} is a dataset YAML file: it names its own image folders, drop images")
        return build_dataset(load_dataset_spec(data), split, keep_crowd=keep_crowd)
    if images is None:
        raise DataError.naming(
            "{data} is a COCO JSON file: also give its image folder ({images})",
            data=os.fspath(data),
            images=Argument("images"),
        )
    return CocoInstances(data, images, keep_crowd=keep_crowd)
