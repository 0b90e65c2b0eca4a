"""Turn what users pass to the Predictor (paths, PIL images, arrays) into RGB uint8 arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from visionmtl.errors import InputError

ImageInput = str | Path | Image.Image | np.ndarray


def _from_pil(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        return _from_array(array / max(array.max(), 1.0) * 255.0)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _from_array(array: np.ndarray) -> np.ndarray:
    """[H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; uint8, uint16 or float (0..1 or 0..255)."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputError(
            f"expected an image array of shape HxW, HxWx3 or HxWx4, got {tuple(array.shape)}"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise InputError(f"empty image array of shape {tuple(array.shape)}")
    if array.shape[2] == 4:  # RGBA: drop alpha
        array = array[:, :, :3]
    elif array.shape[2] == 1:  # greyscale
        array = np.repeat(array, 3, axis=2)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        return (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise InputError("image array contains NaN or infinite values")
        scale = 255.0 if array.max() <= 1.0 else 1.0
        return np.clip(array * scale, 0, 255).round().astype(np.uint8)
    raise InputError(f"unsupported image array dtype {array.dtype}")


def load_rgb(source: ImageInput) -> np.ndarray:
    """Any supported input -> [H, W, 3] uint8 RGB (EXIF rotation applied to files and PIL images)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{path}: no such image file")
        try:
            with Image.open(path) as image:
                image.load()
                return _from_pil(image)
        except Image.DecompressionBombError as error:
            raise InputError(
                f"{path}: image too large to decode safely ({error}); downscale it first, or raise "
                "PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
            ) from None
        except (UnidentifiedImageError, OSError) as error:
            raise InputError(f"{path}: not a readable image ({error})") from None
    if isinstance(source, Image.Image):
        return _from_pil(source)
    if isinstance(source, np.ndarray):
        return _from_array(source)
    raise InputError(
        f"unsupported input type {type(source).__name__}: pass a path, a PIL image or a numpy array"
    )
