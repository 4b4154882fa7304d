"""A folder of images with one sub-folder per class (the layout torchvision's ``ImageFolder``
reads), read with Pillow.

Images are listed and checked once (``PIL.Image.verify`` reads each header, so an unreadable
file is named before training starts) and decoded only when a batch needs them: a folder larger
than memory streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from .errors import DataError

__all__ = ["IMAGE_SUFFIXES", "ImageFolder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageFolder(TorchDataset):
    """``root/<class>/<image>`` as ``(image, class index)`` pairs; an image is a float32
    ``(C, H, W)`` tensor in ``[0, 1]``, resized to ``image_size``; classes are the sub-folders in
    sorted order.

    Args:
        root: the folder.
        image_size: ``(H, W)``; None takes the first image's size.

    Attributes:
        classes: the class names; ``targets``: every item's class index; ``channels``: 1 when
            the first image is greyscale, else 3 (RGB).

    Raises:
        DataError: a folder with no class sub-folders, fewer than two classes, a class without
            images, or an image Pillow cannot read.

    Examples:
        >>> data = ImageFolder("shapes/", image_size=(32, 32))
        >>> x, y = data[0]  # (C, 32, 32) float32 in [0, 1], class index
    """

    def __init__(self, root: str | Path, image_size: Sequence[int] | None = None) -> None:
        from PIL import Image, UnidentifiedImageError

        self.root = Path(root)
        folders = sorted(p for p in self.root.iterdir() if p.is_dir())
        if not folders:
            raise DataError(
                f"The image folder {str(self.root)!r} must hold one sub-folder of images per "
                "class; it has none."
            )
        self.classes = [p.name for p in folders]
        self.files: list[Path] = []
        targets: list[int] = []
        for k, folder in enumerate(folders):
            files = sorted(
                f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise DataError(
                    f"The class folder {str(folder)!r} holds no images (looked for "
                    f"{', '.join(IMAGE_SUFFIXES)})."
                )
            self.files += files
            targets += [k] * len(files)
        if len(self.classes) < 2:
            raise DataError(
                f"The image folder {str(self.root)!r} must hold at least two class sub-folders; "
                f"it has one ({self.classes[0]!r}): nothing to learn."
            )
        self.targets = np.asarray(targets, dtype=np.int64)
        for f in self.files:
            try:
                with Image.open(f) as image:
                    image.verify()
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                raise DataError(f"The image {str(f)!r} cannot be read: {exc}.") from None
        with Image.open(self.files[0]) as first:
            self.mode = "L" if first.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            size = (first.height, first.width)
        self.channels = 1 if self.mode == "L" else 3
        if image_size is not None:
            size = (int(image_size[0]), int(image_size[1]))
        self.image_size = size

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every item."""
        return (self.channels, *self.image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path = self.files[index]
        try:
            with Image.open(path) as image:
                image = image.convert(self.mode)
                if (image.height, image.width) != self.image_size:
                    h, w = self.image_size
                    image = image.resize((w, h), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.float32) / 255.0
        except OSError as exc:
            raise DataError(f"The image {str(path)!r} cannot be read: {exc}.") from None
        tensor = torch.from_numpy(array)
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        return tensor.contiguous(), int(self.targets[index])
