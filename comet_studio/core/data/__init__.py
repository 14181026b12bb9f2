"""Data: raw folders (the main input), labelled layouts for evaluation, and planted contamination."""

from .contamination import ContaminatedSet, contaminate
from .folder import ImageFolder, NotEnoughImagesError, SkippedFile, scan_folder
from .images import IMAGE_EXTENSIONS, ImageReadError, read_image, read_mask
from .mvtec import LabelledImage, LabelledSet, is_mvtec_category, load_kolektor, load_mvtec

__all__ = [
    "ContaminatedSet", "contaminate", "ImageFolder", "NotEnoughImagesError", "SkippedFile", "scan_folder",
    "IMAGE_EXTENSIONS", "ImageReadError", "read_image", "read_mask", "LabelledImage", "LabelledSet",
    "is_mvtec_category", "load_kolektor", "load_mvtec",
]
