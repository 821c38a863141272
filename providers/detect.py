"""What an image is of: the prompt it was made with (its ``parameters``), or what OpenCV's Haar
cascades find in it (human faces, cat faces)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from PIL import Image

import imagemeta
from providers import procedural

DETECT_SIDE = 512  # detectors run on a copy no larger than this
# Each detector's cascade file, scale step and how many overlapping hits confirm a face.
_CASCADES = {
    "face": ("haarcascade_frontalface_default.xml", 1.1, 5),
    "cat": ("haarcascade_frontalcatface.xml", 1.05, 3),
}
_lock = threading.Lock()  # a CascadeClassifier is not safe to share between threads


@dataclass(frozen=True)
class Found:
    """A subject seen in an image: a phrase naming it, and where the name came from."""

    phrase: str  # "a red fox", "a portrait of a person", "two cats"
    family: str | None  # the subject family (subjects.families()), when known
    source: str  # "parameters" or "detector"


@cache
def _cascade(name: str) -> cv2.CascadeClassifier:
    """OpenCV's Haar cascade for ``name``, loaded once."""
    classifier = cv2.CascadeClassifier(cv2.data.haarcascades + _CASCADES[name][0])
    if classifier.empty():
        raise RuntimeError(f"OpenCV's {_CASCADES[name][0]} could not be loaded")
    return classifier


def from_parameters(image: Image.Image) -> Found | None:
    """The subject of the prompt an image carries in its ``parameters``, if it names one."""
    fields = imagemeta.read(image)
    if not fields:
        return None
    subject, noun = procedural.subject_of(fields["prompt"])
    if subject is None:
        return None
    if subject.word.endswith("s") and not subject.word.endswith("ss"):
        return Found(noun, subject.family, "parameters")
    return Found(f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}", subject.family, "parameters")


def count_faces(image: Image.Image, kind: str) -> int:
    """How many faces of ``kind`` ("face": human, "cat") OpenCV's Haar cascade finds in the image."""
    grey = image.convert("L")
    scale = min(1.0, DETECT_SIDE / max(grey.size))
    if scale < 1:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))))
    pixels = cv2.equalizeHist(np.asarray(grey, np.uint8))
    smallest = max(24, min(grey.size) // 10)
    _, step, neighbours = _CASCADES[kind]
    with _lock:
        found = _cascade(kind).detectMultiScale(
            pixels, scaleFactor=step, minNeighbors=neighbours, minSize=(smallest, smallest)
        )
    return len(found)


_NUMBERS = {2: "two", 3: "three", 4: "four"}


def from_detectors(image: Image.Image) -> Found | None:
    """A subject OpenCV's detectors find: a person's face (a portrait, a group) or a cat's face."""
    if min(image.size) < 24:
        return None
    cats = count_faces(image, "cat")
    if cats:
        return Found("a cat" if cats == 1 else f"{_NUMBERS.get(cats, 'several')} cats", "cat", "detector")
    faces = count_faces(image, "face")
    if faces == 1:
        return Found("a portrait of a person", "portrait", "detector")
    if faces:
        return Found(f"a group portrait of {_NUMBERS.get(faces, 'several')} people", "portrait", "detector")
    return None


def subject(image: Image.Image) -> Found | None:
    """The image's subject: from its ``parameters`` when it has them, else from the detectors."""
    return from_parameters(image) or from_detectors(image)
