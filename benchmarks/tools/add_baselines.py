"""Add the trivial baselines to runs written before ForgettingMetrics computed them.

    python benchmarks/tools/add_baselines.py RUN_DIR... [--data-dir ../shared/data/CL_Benchmark]

For each run: the training labels are drawn again exactly as the data module drew them (the run's
``config.yaml``: task list, ``max_train_samples``, ``seed``, ``on_unknown_label``; the same seeded,
class-stratified subsample), the test labels and the own-stage scores come from its
``predictions.jsonl``, and :func:`nlora_lightning.reporting.baselines.run_baselines` gives
``AA_chance``, ``AA_majority``, ``never_learned`` and ``baselines`` with the run's own bootstrap
settings. They are added to ``cl_metrics.json`` (no other key changes) and ``report.md`` is
written again from the run's files (the figures are left as they are). A run without per-sample
predictions is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Optional

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nlora_lightning.data.benchmark import TaskData, load_instructions, load_task, resolve_task_names  # noqa: E402
from nlora_lightning.data.sampling import stratified_subsample  # noqa: E402
from nlora_lightning.io import write_json_atomic, write_text_atomic  # noqa: E402
from nlora_lightning.reporting.baselines import run_baselines  # noqa: E402
from nlora_lightning.reporting.predictions import read_predictions  # noqa: E402
from nlora_lightning.reporting.report import REPORT, render_markdown  # noqa: E402
from nlora_lightning.reporting.runfiles import CL_METRICS, read_run  # noqa: E402

BASELINE_KEYS = ("AA_chance", "AA_majority", "never_learned", "baselines")


@lru_cache(maxsize=None)
def _task(data_dir: str, name: str, instruction_config: Optional[str], on_unknown_label: str) -> TaskData:
    return load_task(data_dir, name, load_instructions(Path(data_dir), instruction_config), on_unknown_label, splits=("train",))


def training_labels(data: dict, data_dir: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Task names, each task's training labels (the data module's subsample) and label-set sizes."""
    names = resolve_task_names(data.get("tasks"), data.get("preset"))
    seed, cap = int(data.get("seed") or 0), data.get("max_train_samples")
    train, counts = [], []
    for index, name in enumerate(names):
        task = _task(str(data_dir), name, data.get("instruction_config"), data.get("on_unknown_label") or "error")
        labels = [r["label"] for r in task.records["train"]]
        # as TaskSequenceDataModule._select draws the "train" split of sequence task `index`
        train.append([labels[i] for i in stratified_subsample(labels, cap, seed + 7919 * index)])
        counts.append(len(task.labels))
    return names, train, counts


def add_baselines(run_dir: Path, data_dir: Optional[Path] = None) -> Optional[str]:
    """Add the baselines to one run; returns why it was skipped, or ``None`` when it was done."""
    records = read_predictions(run_dir)
    if not records:
        return "no per-sample predictions"
    data = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("data") or {}
    names, train, counts = training_labels(data, data_dir or Path(data["data_dir"]))
    metrics = json.loads((run_dir / CL_METRICS).read_text())
    if metrics.get("tasks") != names:
        return f"config.yaml's tasks {names} are not cl_metrics.json's {metrics.get('tasks')}"
    stages = [list(range(len(names)))] if data.get("joint") else [[t] for t in range(len(names))]
    boot = metrics.get("bootstrap") or {}
    result = run_baselines(records, names, stages, train, counts, num_resamples=int(boot.get("resamples", 1000)),
                           seed=int(boot.get("seed", 0)))
    write_json_atomic(run_dir / CL_METRICS, {**{k: v for k, v in metrics.items() if k not in BASELINE_KEYS}, **result})
    write_text_atomic(run_dir / REPORT, render_markdown(read_run(run_dir)))
    return None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--data-dir", type=Path, default=None, help="CL_Benchmark folder (default: each config's data.data_dir)")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        skipped = add_baselines(run_dir, args.data_dir)
        if skipped:
            print(f"[skip] {run_dir}: {skipped}")
            continue
        metrics = json.loads((run_dir / CL_METRICS).read_text())
        print(f"[done] {run_dir}: AA {100 * metrics['AA']:.2f}, majority {100 * metrics['AA_majority']:.2f}, "
              f"chance {100 * metrics['AA_chance']:.2f}, never learned {len(metrics['never_learned'])}: "
              f"{', '.join(metrics['never_learned'])}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
