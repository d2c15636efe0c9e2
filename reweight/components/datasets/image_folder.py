"""``image_folder``: a folder tree with one sub-folder per class, the layout of torchvision's
``ImageFolder``. Split by folders (``root/{source,target,test}/<class>/*``) or one tree
(``root/<class>/*``) split per class by seeded fractions.

Reading is a map-style ``torch.utils.data.Dataset`` (one image decoded per item, converted to
one mode and size so every item has the same shape), so a streamed source can read it item by
item; the in-memory data set stacks it once, as uint8 N×C×H×W.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from reweight.components.datasets.user_splits import (
    PARTS,
    FractionOptions,
    NoiseOptions,
    Part,
    assemble,
    split_by_fraction,
)
from reweight.core.data import BilevelData
from reweight.core.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
HINT = "expected one sub-folder per class holding image files (see the data page of the docs)"


class FolderSplitOptions(FractionOptions):
    by: Literal["folders", "fraction"] = Field(
        "folders", description="folders: root/source, root/target, root/test; fraction: one tree split per class.")


class ImageFolderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="The root folder of the tree.")
    split: FolderSplitOptions = Field(default_factory=FolderSplitOptions)
    size: int = Field(32, ge=4, description="Every image is resized to size×size (bilinear).")
    mode: Literal["L", "RGB"] = Field("RGB", description="L: one grey channel; RGB: three channels.")
    noise: NoiseOptions = Field(default_factory=NoiseOptions, description="Optional label noise on the source.")


def class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root}: missing or not a folder; {HINT}")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders; {HINT}")
    return classes


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class ImageFolderDataset(torch.utils.data.Dataset):
    """``(uint8 C×size×size image, int64 label)`` per index, decoded by Pillow on access."""

    def __init__(self, root: Path, size: int, mode: str, classes: list[str] | None = None) -> None:
        found = [p.name for p in class_folders(root)]
        if classes is not None and found != classes:
            raise DataError(f"{root}: classes {found} differ from the source's {classes}; every split needs the "
                            "same class sub-folders")
        self.classes = found
        self.size, self.mode = size, mode
        self.samples = [(path, k) for k, name in enumerate(found) for path in image_files(root / name)]
        for name in found:
            if not image_files(root / name):
                raise DataError(f"{root / name}: no image files ({', '.join(IMAGE_SUFFIXES)}); {HINT}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                image = image.convert(self.mode).resize((self.size, self.size), Image.Resampling.BILINEAR)
                pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        except Exception as error:  # noqa: BLE001 - Pillow raises many kinds for a damaged file
            raise DataError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None
        channels = 1 if self.mode == "L" else 3
        x = pixels.view(self.size, self.size, channels).permute(2, 0, 1).contiguous()
        return x, torch.tensor(label, dtype=torch.long)

    def stacked(self) -> Part:
        """The whole folder in memory, one decode per image."""
        items = [self[k] for k in range(len(self))]
        return Part(torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]))


def build_image_folder(options: ImageFolderOptions, seed: int) -> BilevelData:
    root = Path(options.path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: missing or not a folder; {HINT}")
    if options.split.by == "fraction":
        whole = ImageFolderDataset(root, options.size, options.mode)
        parts = split_by_fraction(whole.stacked(), options.split, len(whole.classes), seed, str(root))
        names = whole.classes
    else:
        missing = [part for part in PARTS if not (root / part).is_dir()]
        if missing:
            raise DataError(f"{root}: no {', '.join(missing)} folder; split.by: folders needs root/source, "
                            "root/target and root/test (or use split.by: fraction)")
        source = ImageFolderDataset(root / "source", options.size, options.mode)
        names = source.classes
        parts = {"source": source.stacked()}
        for part in ("target", "test"):
            parts[part] = ImageFolderDataset(root / part, options.size, options.mode, names).stacked()
    return assemble(parts, len(names), names, options.noise, seed, str(root))
