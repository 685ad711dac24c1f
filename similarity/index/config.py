"""The settings the index package reads, as one dataclass, and where it gets them.

Like the model runtime, the index package never imports Django: the Django
app calls :func:`configure` when it starts; scripts and tests may pass their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class IndexSettings:
    directory: Path = Path("index")  # where the index files and their manifest live
    index_type: str = "auto"  # auto, flat or ivf
    storage: str = "auto"  # auto, float32, fp16, sq8 or pq
    exact_limit: int = 50_000  # auto: exact search below this many vectors, inverted lists above
    ivf_nprobe: int = 32  # inverted lists searched per query
    device: str = "auto"  # auto or cuda: search on the GPUs when FAISS has them


_provider: Callable[[], IndexSettings] = IndexSettings


def configure(provider: Callable[[], IndexSettings]) -> None:
    """Take the index settings from ``provider`` from now on."""
    global _provider
    _provider = provider


def current() -> IndexSettings:
    return _provider()
