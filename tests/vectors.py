"""Where the shared test vectors live, and a loader for the Mission-Bound Authorization set.

``MISSION_LEDGER_VECTORS`` names the ``vectors`` directory explicitly (CI clones the repository
elsewhere); otherwise the first ancestor of this file with a ``shared/vectors`` child wins, and
failing that ``/work/shared/vectors``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_VECTORS = Path("/work/shared/vectors")
MISSION_BOUND = "mission-bound-authorization"


def vectors_dir() -> Path:
    """The directory that holds every vector folder."""
    configured = os.environ.get("MISSION_LEDGER_VECTORS")
    if configured:
        return Path(configured)
    for ancestor in Path(__file__).resolve().parents:
        candidate = ancestor / "shared" / "vectors"
        if candidate.is_dir():
            return candidate
    return DEFAULT_VECTORS


def mission_vectors_dir() -> Path:
    """The Mission-Bound Authorization vectors (README, anchors, digests, subset rule)."""
    return vectors_dir() / MISSION_BOUND


def load_mission_vector(name: str) -> Any:
    """Parse one JSON file of the Mission-Bound Authorization vectors."""
    return json.loads((mission_vectors_dir() / name).read_text(encoding="utf-8"))
