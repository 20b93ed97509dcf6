"""Per-sample prediction files of a run: ``predictions/stage{i}_task{j}.jsonl`` and ``zeroshot_task{j}.jsonl``.

One JSON object per line and test sample, sorted by ``sample_id``::

    {"sample_id": 17, "prediction": "positive", "label": "negative", "correct": false, "score": 0.0, "metric": "exact_match"}

``sample_id`` is the sample's position in the task's test file (after records dropped by
``data.on_unknown_label="drop"``), so two runs with the same data seed and sizes evaluate the same
ids and can be paired sample by sample; ``prediction`` is the generated text (``generate``) or the
label ranked first (``rank``). ``i`` is the stage index (0-based), ``j`` the task's column
(sequence tasks, then held-out tasks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from nlora_lightning.io import write_text_atomic

__all__ = ["PREDICTIONS_DIR", "aligned_correctness", "predictions_path", "read_predictions", "write_predictions"]

PREDICTIONS_DIR = "predictions"


def predictions_path(run_dir: str | Path, stage: Optional[int], task: int) -> Path:
    """The file of task ``task`` evaluated after stage ``stage`` (``None``: the zero-shot baseline)."""
    prefix = "zeroshot" if stage is None else f"stage{stage}"
    return Path(run_dir) / PREDICTIONS_DIR / f"{prefix}_task{task}.jsonl"


def write_predictions(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write ``records`` (dicts with ``sample_id``, ``prediction``, ``label``, ``correct``) sorted by id, atomically."""
    rows = sorted(records, key=lambda r: (r["sample_id"] is None, r["sample_id"]))
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The records of one file, in file order.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: A line is not a JSON object with ``sample_id`` and ``correct``.
    """
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        if not isinstance(record, dict) or "sample_id" not in record or "correct" not in record:
            raise ValueError(f"{path}:{number}: expected an object with 'sample_id' and 'correct'")
        records.append(record)
    return records


def aligned_correctness(paths: list[str | Path]) -> Optional[torch.Tensor]:
    """A ``(len(paths), n)`` tensor of the files' per-sample scores (``score``, else 0/1 ``correct``), columns ordered by ``sample_id``.

    ``None`` when a file is missing or the files do not hold the same sample ids (then they cannot
    be paired).
    """
    rows, ids = [], None
    for path in paths:
        if not Path(path).is_file():
            return None
        by_id = {r["sample_id"]: float(r.get("score", r["correct"])) for r in read_predictions(path)}  # score: any metric
        if ids is None:
            ids = sorted(by_id, key=lambda i: (i is None, i))
        elif set(by_id) != set(ids):
            return None
        rows.append([by_id[i] for i in ids])
    if not rows or not ids:
        return None
    return torch.tensor(rows, dtype=torch.float64)
