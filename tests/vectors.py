"""The vendored test vectors (``tests/fixtures/vectors``) and a loader for the Mission-Bound
Authorization set. The suite reads nothing outside the repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent / "fixtures" / "vectors"
MISSION_BOUND = "mission-bound-authorization"


def vectors_dir() -> Path:
    """The directory that holds every vector folder."""
    return VECTORS


def mission_vectors_dir() -> Path:
    """The Mission-Bound Authorization vectors (README, anchors, digests, subset rule)."""
    return VECTORS / MISSION_BOUND


def load_mission_vector(name: str) -> Any:
    """Parse one JSON file of the Mission-Bound Authorization vectors."""
    return json.loads((mission_vectors_dir() / name).read_text(encoding="utf-8"))
