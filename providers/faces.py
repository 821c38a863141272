"""Face swap on the CPU: OpenCV's Haar cascade finds the faces, Poisson blending puts one on the other.

``swap`` detects the largest frontal face in each image, scales and moves the swap image so its face
box lies on the target's, matches the face's colour to the target's skin (mean and spread of each
CIELAB channel), and clones it in with ``cv2.seamlessClone`` inside an ellipse, so the target's
lighting carries across the seam. Only the face region of the target changes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from providers import ProviderError
from providers.procedural import as_rgb

CASCADE = "haarcascade_frontalface_default.xml"
DETECT_SIDE = 1024  # faces are looked for on a copy no larger than this
MIN_FACE_SHARE = 1 / 16  # a face narrower than this share of the image's short side is not used
SCALE_FACTOR = 1.1
MIN_NEIGHBOURS = 5
SURE_SHARE = 0.5  # a face needs at least this share of the best face's votes to be chosen
# The swapped region: an ellipse in the face box, a little below its centre (the box starts at the brows).
ELLIPSE_AXES = (0.40, 0.50)
ELLIPSE_DROP = 0.06
MARGIN = 8  # pixels of the target around the ellipse that the blend may touch

_local = threading.local()  # a CascadeClassifier keeps per-image state while it runs: one per thread


@dataclass(frozen=True)
class Face:
    """A face's box in image pixels."""

    x: int
    y: int
    width: int
    height: int

    @property
    def centre(self) -> tuple[float, float]:
        """The box's centre."""
        return self.x + self.width / 2, self.y + self.height / 2


def _classifier() -> cv2.CascadeClassifier:
    """This thread's frontal-face cascade, loaded from the copy that ships inside OpenCV."""
    classifier = getattr(_local, "classifier", None)
    if classifier is None:
        classifier = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if classifier.empty():
            raise RuntimeError(f"OpenCV's {CASCADE} could not be loaded from {cv2.data.haarcascades}")
        _local.classifier = classifier
    return classifier


def find_face(image: Image.Image) -> Face | None:
    """The largest frontal face in ``image``, or None when there is none."""
    grey = np.asarray(as_rgb(image).convert("L"))
    scale = min(1.0, DETECT_SIDE / max(grey.shape))
    if scale < 1:
        size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    smallest = max(24, round(min(grey.shape) * MIN_FACE_SHARE))
    if min(grey.shape) < smallest:
        return None
    boxes, votes = _classifier().detectMultiScale2(
        cv2.equalizeHist(grey), SCALE_FACTOR, MIN_NEIGHBOURS, minSize=(smallest, smallest)
    )
    if len(boxes) == 0:
        return None
    # The largest of the faces the cascade is sure of: a stray match has a few votes, a face dozens.
    sure = [box for box, count in zip(boxes, votes, strict=True) if count >= max(votes) * SURE_SHARE]
    x, y, w, h = max(sure, key=lambda box: int(box[2]) * int(box[3]))
    return Face(*(round(int(v) / scale) for v in (x, y, w, h)))


def swap(target: Image.Image, source: Image.Image) -> Image.Image:
    """``target`` with its face replaced by the face in ``source``; ProviderError names an image with none."""
    target_face = find_face(target)
    if target_face is None:
        raise ProviderError("No face was found in the target image")
    source_face = find_face(source)
    if source_face is None:
        raise ProviderError("No face was found in the swap image")
    destination = np.array(as_rgb(target))
    mask = _face_mask(target_face, destination.shape[1::-1])
    x, y, w, h = cv2.boundingRect(mask)
    box = (max(0, x - MARGIN), max(0, y - MARGIN), min(mask.shape[1], x + w + MARGIN),
           min(mask.shape[0], y + h + MARGIN))
    region = destination[box[1]:box[3], box[0]:box[2]]
    moved, covered = _align(np.asarray(as_rgb(source)), source_face, target_face, box)
    mask = mask[box[1]:box[3], box[0]:box[2]] & covered
    mask[[0, -1], :] = 0  # seamlessClone needs a border of unmasked pixels
    mask[:, [0, -1]] = 0
    if cv2.countNonZero(mask) == 0:
        raise ProviderError("The face in the target image is too close to its edge to swap")
    matched = _match_colour(moved, region, mask)
    x, y, w, h = cv2.boundingRect(mask)
    # The centre of the mask's bounding box: seamlessClone then leaves the source where it is.
    region[:] = cv2.seamlessClone(matched, region, mask, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    return Image.fromarray(destination)


def _align(
    source: np.ndarray, source_face: Face, target_face: Face, box: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The source scaled and moved so its face box lies on the target's, cut to ``box`` of the target.

    Also returns where the moved source covers that box (white).
    """
    scale = target_face.width / source_face.width
    (sx, sy), (tx, ty) = source_face.centre, target_face.centre
    left, top, right, bottom = box
    matrix = np.float32([[scale, 0, tx - sx * scale - left], [0, scale, ty - sy * scale - top]])
    size = (right - left, bottom - top)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    moved = cv2.warpAffine(source, matrix, size, flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
    inside = np.full(source.shape[:2], 255, np.uint8)
    covered = cv2.warpAffine(inside, matrix, size, flags=cv2.INTER_NEAREST, borderValue=0)
    return moved, covered


def _face_mask(face: Face, size: tuple[int, int]) -> np.ndarray:
    """White inside the ellipse that holds the face's features (brows, eyes, nose, mouth, chin)."""
    mask = np.zeros((size[1], size[0]), np.uint8)
    cx, cy = face.centre
    centre = (round(cx), round(cy + face.height * ELLIPSE_DROP))
    axes = (max(1, round(face.width * ELLIPSE_AXES[0])), max(1, round(face.height * ELLIPSE_AXES[1])))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, thickness=-1)
    return mask


def _match_colour(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``source`` recoloured so its masked region has the target's mean and spread in each CIELAB channel."""
    inside = mask > 0
    src = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    dst = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    src_mean, src_std = src[inside].mean(0), src[inside].std(0)
    dst_mean, dst_std = dst[inside].mean(0), dst[inside].std(0)
    gain = np.clip(dst_std / np.maximum(src_std, 1.0), 0.5, 2.0)
    matched = (src - src_mean) * gain + dst_mean
    return cv2.cvtColor(np.clip(matched, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
