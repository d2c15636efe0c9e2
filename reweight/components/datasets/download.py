"""``reweight data download NAME``: fetch an image set with torchvision's downloaders into the
data root, in the layout the readers expect; where that is impossible (no ``vision`` extra,
no network, no downloader for the set), say exactly which files to place where."""

from __future__ import annotations

from pathlib import Path

from reweight.components.datasets.catalog import IDX_FILES, IMAGE_SETS, ImageSet, load_split
from reweight.core.errors import DataError


def expected_files(image_set: ImageSet, root: Path) -> list[str]:
    folder = root / image_set.folder
    if image_set.format == "idx":
        return [f"{folder / name}[.gz]" for pair in IDX_FILES.values() for name in pair]
    if image_set.format == "parquet":
        return [f"{folder}/{prefix}*.parquet (any depth)" for (prefix,) in image_set.files.values()]
    return [str(folder / name) for names in image_set.files.values() for name in names]


def placement(image_set: ImageSet, root: Path) -> str:
    return f"place {image_set.source} as: " + ", ".join(expected_files(image_set, root))


def _torchvision_fetch(image_set: ImageSet, root: Path) -> None:
    import torchvision.datasets as tv  # the optional ``vision`` extra

    cls = getattr(tv, image_set.torchvision)
    if image_set.name == "svhn":
        for split in ("train", "test"):
            cls(str(root / image_set.folder), split=split, download=True)
    else:
        for train in (True, False):
            cls(str(root), train=train, download=True)


def download(name: str, root: Path) -> str:
    """Download ``name`` into ``root``; return a line saying what is there now."""
    if name not in IMAGE_SETS or name == "parquet":
        known = ", ".join(n for n in IMAGE_SETS if n != "parquet")
        raise DataError(f"unknown image set {name!r} (known: {known})")
    image_set = IMAGE_SETS[name]
    if image_set.torchvision is None:
        raise DataError(f"{name} has no downloader; {placement(image_set, root)}")
    try:
        import torchvision  # noqa: F401
    except Exception as error:  # noqa: BLE001 - a broken torchvision fails in many ways
        raise DataError(
            f"torchvision is not importable ({type(error).__name__}); install it with "
            f"`pip install 'reweight[vision]'`, or {placement(image_set, root)}"
        ) from None
    try:
        _torchvision_fetch(image_set, root)
    except Exception as error:  # noqa: BLE001 - network and archive errors alike
        raise DataError(f"could not download {name} ({type(error).__name__}: {error}); {placement(image_set, root)}") from None
    counts = [len(load_split(name, split, root)[1]) for split in image_set.files]
    return f"{name}: {' + '.join(map(str, counts))} examples in {root / image_set.folder}"


def describe(root: Path) -> list[tuple[str, str, str]]:
    """(name, folder, status) of every known set under ``root``."""
    rows = []
    for name, image_set in IMAGE_SETS.items():
        if name == "parquet":
            continue
        try:
            counts = [len(load_split(name, split, root)[1]) for split in image_set.files]
            status = "ok: " + " + ".join(map(str, counts))
        except DataError as error:
            status = "missing" if ": missing;" in str(error) else "unreadable: " + str(error).split(";")[0]
        rows.append((name, str(root / image_set.folder), status))
    return rows
