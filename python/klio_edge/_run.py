"""A run's outputs as a dataset: ``open_run(out_dir)`` reads the ledger's done items (read-only)
and gives each item's meta, ledger row and arrays (memory-mapped ``.npy``, loaded on first
use). Pure Python (sqlite3 and numpy): nothing is written, and no klio-edge process is needed.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import numpy as np

LEDGER = "klio-ledger.sqlite"


class Item:
    """One done item: ``element``, ``source``, ``duration_s``, ``ledger`` (its row, a dict),
    ``meta`` (its ``meta.json``), and its arrays by name (``item["log_mel"]``, ``item.arrays``),
    memory-mapped read-only."""

    def __init__(self, folder: Path, row: Dict[str, Any]):
        self.folder = folder
        self.ledger = row
        self.element: str = row["element"]
        self.source: str = row["source"]
        self.duration_s: Optional[float] = row["duration_s"]
        self.outputs: List[str] = json.loads(row["outputs"] or "[]")
        self._meta: Optional[dict] = None
        self._arrays: Dict[str, np.ndarray] = {}

    @property
    def meta(self) -> dict:
        if self._meta is None:
            with open(self.folder / "meta.json", encoding="utf-8") as f:
                self._meta = json.load(f)
        return self._meta

    def names(self) -> List[str]:
        """The arrays this item has (its ``.npy`` outputs, without the extension)."""
        return [o[:-4] for o in self.outputs if o.endswith(".npy")]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            if name not in self.names():
                raise KeyError(f"{self.element} has no array {name!r} (it has {self.names()})")
            self._arrays[name] = np.load(self.folder / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    @property
    def arrays(self) -> Dict[str, np.ndarray]:
        """Every array, by name (each mapped on first access)."""
        return {n: self[n] for n in self.names()}

    def json(self, name: str) -> Any:
        """A JSON output (a segment or label model's ``<name>.json``)."""
        with open(self.folder / f"{name}.json", encoding="utf-8") as f:
            return json.load(f)

    def __repr__(self) -> str:
        return f"Item({self.element!r}, arrays={self.names()})"


class Run:
    """The done items of an output folder, in element order: ``len(run)``, ``run[i]``,
    ``run["element-id"]``, ``for item in run``."""

    def __init__(self, out_dir: Union[str, os.PathLike], ledger: Optional[Union[str, os.PathLike]] = None):
        self.out_dir = Path(out_dir)
        if "://" in str(out_dir):
            raise ValueError(
                f"{out_dir}: open_run reads a local output folder; for a bucket, "
                "`klio-edge export` it to Parquet or WebDataset"
            )
        self.ledger_path = Path(ledger) if ledger is not None else self.out_dir / LEDGER
        if not self.ledger_path.is_file():
            raise FileNotFoundError(f"no ledger at {self.ledger_path} (is {out_dir} a klio-edge output folder?)")
        self.rows = _done_rows(self.ledger_path)
        self._index = {r["element"]: i for i, r in enumerate(self.rows)}

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Item]:
        for i in range(len(self.rows)):
            yield self[i]

    def __getitem__(self, key: Union[int, str]) -> Item:
        i = self._index[key] if isinstance(key, str) else key
        row = self.rows[i]
        return Item(self.out_dir / row["element"], row)

    @property
    def elements(self) -> List[str]:
        return [r["element"] for r in self.rows]

    def __repr__(self) -> str:
        return f"Run({str(self.out_dir)!r}, {len(self)} items)"


def _done_rows(path: Path) -> List[Dict[str, Any]]:
    uri = path.resolve().as_uri()
    # As `klio-edge export`: a ledger no process has open (no -wal beside it) is read as an
    # immutable file, which creates nothing beside it; one being written is opened read-only.
    live = path.with_name(path.name + "-wal").exists()
    conn = sqlite3.connect(f"{uri}?mode=ro" + ("" if live else "&immutable=1"), uri=True)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM items WHERE state = 'done' ORDER BY element"
        ).fetchall()
        return [dict(r) for r in rows]
    finally:
        conn.close()


def open_run(out_dir: Union[str, os.PathLike], ledger: Optional[Union[str, os.PathLike]] = None) -> Run:
    """The done items of the output folder ``out_dir`` (its ledger ``klio-ledger.sqlite``, or
    ``ledger``): iterate it for the dataset loop a training script wants::

        for item in klio_edge.open_run("features"):
            x = item["log_mel"]          # memory-mapped float32, librosa's [n_mels][frames]
            sr = item.meta["sample_rate_hz"]
    """
    return Run(out_dir, ledger)
