"""Reading one image file into an RGB uint8 array, with a specific reason when it cannot be read."""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "ImageReadError", "read_image", "is_image_name"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Decompression-bomb guard: 100 megapixels is far above any inspection camera we expect.
MAX_PIXELS = 100_000_000


class ImageReadError(ValueError):
    """A file that is not a usable image; the message says why."""


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    array = array.astype(np.float64)
    if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0 and array.min(initial=0) >= 0:
        return np.round(array * 255).astype(np.uint8)
    low, high = float(array.min(initial=0)), float(array.max(initial=0))
    if high <= 255 and low >= 0:
        return array.astype(np.uint8)
    # 16-bit (or 32-bit) data: stretch its own range to 8 bits so faint contrast survives.
    scale = 255.0 / max(high - low, 1e-12)
    return np.round((array - low) * scale).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read ``path`` as an RGB ``uint8`` array of shape (H, W, 3).

    Grayscale, palette, RGBA (composited on white), 16-bit and multi-page TIFF (first page) are accepted.
    Raises ``ImageReadError`` with the reason for empty, truncated, oversized or non-image files.
    """
    path = Path(path)
    info = _regular_file(path)
    if info.st_size == 0:
        raise ImageReadError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # MAX_PIXELS is our limit: Pillow's lower warning level (89 MP) would refuse images below it,
            # and its error level (2x that) still refuses bombs before any pixel is decoded.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageReadError(f"image too large ({width}x{height} > {MAX_PIXELS} pixels)")
                image.load()
                array = _pil_to_rgb(image)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"image too large (decompression-bomb guard: {error})") from error
    except UnidentifiedImageError as error:
        raise ImageReadError("not an image (unrecognised format)") from error
    except PermissionError as error:
        raise ImageReadError("permission denied") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"corrupt or truncated image ({error})") from error
    if array.shape[0] < 8 or array.shape[1] < 8:
        raise ImageReadError(f"image too small ({array.shape[1]}x{array.shape[0]}, need at least 8x8)")
    return array


def _regular_file(path: Path) -> os.stat_result:
    """``stat`` of ``path``, refusing what Pillow must not open: missing or looping links, folders, and
    pipes or devices (opening a named pipe would block the whole run until something writes to it)."""
    try:
        info = path.stat()
    except OSError as error:
        if path.is_symlink() and error.errno == errno.ENOENT:
            raise ImageReadError(f"broken symbolic link (its target {os.readlink(path)!r} does not exist)") \
                from error
        raise ImageReadError(f"cannot access file ({error.strerror or error})") from error
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError("a folder, not an image file (its name ends like an image)")
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError("not a regular file (a pipe, socket or device)")
    return info


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = _to_uint8(np.asarray(image))
    elif image.mode in ("1", "L"):
        array = _to_uint8(np.asarray(image.convert("L")))
    else:
        array = _to_uint8(np.asarray(image.convert("RGB")))
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a ground-truth mask as a bool array; any non-zero value (or palette index) is defect."""
    with Image.open(path) as image:
        if image.mode == "P":
            array = np.asarray(image) > 0
        else:
            array = np.asarray(image.convert("L")) > 0
    if shape is not None and array.shape != shape:
        resized = Image.fromarray(array.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.NEAREST)
        array = np.asarray(resized) > 127
    return array
