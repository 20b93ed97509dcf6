"""Check the numbers a results README quotes against the runs and tables they come from.

    python benchmarks/check_readme_claims.py [FOLDER ...] [--data-dir ../shared/data/CL_Benchmark]

Default folders: every ``benchmarks/results/**`` folder with a README.md. Two checks per README:

1. Tables. Every numeric cell of every Markdown table (after the header row) must be a figure the
   folder's runs give, at the precision it is quoted: AA, BWT, their bootstrap ends, each accuracy
   matrix entry, own-task accuracy (mean of the matrix diagonal), collision (the mean over task pairs
   and each entry), train time, and per method the mean and standard deviation over every subset of
   its seeds and the per-seed differences between methods; or a number printed in a table that a
   tool wrote into the folder (``comparison.md``, ``*_paired.md``, ...: ``nlora compare`` output).
2. Claims. Sentences of the prose that state recomputed facts (``CLAIMS`` below): the script formats
   each sentence from the runs (and, where a claim needs the training files, from ``--data-dir``) and
   the README must contain it word for word (whitespace aside). A claim that needs data which is not
   there is reported as skipped, not passed.

Exits 1 with one line per mismatch, 0 when every number checks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nlora_lightning.metrics.intervals import t_interval_95  # noqa: E402
from nlora_lightning.reporting.runfiles import RunFiles, read_run  # noqa: E402
from nlora_lightning.reporting.predictions import read_predictions  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
NUMERIC_CELL = re.compile(r"^[\s*+\-\d.,\[\]±/%]*\d[\s*+\-\d.,\[\]±/%]*$")
RUN_NAME = re.compile(r"^(?P<method>.+)-seed(?P<seed>\d+)$")
METRICS = ("AA", "BWT", "own", "collision")


# ----- the runs of a folder ------------------------------------------------------------------------
def own_task(run: RunFiles) -> Optional[float]:
    matrix = (run.metrics or {}).get("acc_matrix") or []
    diagonal = [row[i] for i, row in enumerate(matrix) if i < len(row) and isinstance(row[i], (int, float))]
    return sum(diagonal) / len(diagonal) if diagonal else None


def figures(run: RunFiles) -> dict[str, Optional[float]]:
    """The run's headline figures in percent."""
    percent = lambda v: None if v is None else 100 * v  # noqa: E731
    collision = run.collision.pair_mean() if run.collision is not None else None
    return {"AA": percent(run.metric("AA")), "BWT": percent(run.metric("BWT")), "own": percent(own_task(run)),
            "collision": percent(collision)}


def find_runs(folder: Path) -> dict[Path, RunFiles]:
    return {path.parent: read_run(path.parent) for path in sorted(folder.rglob("cl_metrics.json"))}


def method_groups(runs: dict[Path, RunFiles]) -> dict[tuple[Path, str], dict[int, dict[str, Optional[float]]]]:
    """``(parent folder, method) -> {seed: figures}`` for run folders named ``<method>-seed<k>``."""
    groups: dict[tuple[Path, str], dict[int, dict]] = defaultdict(dict)
    for directory, run in runs.items():
        match = RUN_NAME.match(directory.name)
        if match:
            groups[(directory.parent, match["method"])][int(match["seed"])] = figures(run)
    return groups


def number_pool(folder: Path, runs: dict[Path, RunFiles]) -> list[float]:
    """Every figure a table cell of the folder's README may quote (see the module docstring)."""
    pool: list[float] = []
    for run in runs.values():
        metrics = run.metrics or {}
        pool += [v for v in figures(run).values() if v is not None]
        for key in ("forgetting", "FWT"):
            pool += [100 * run.metric(key)] if run.metric(key) is not None else []
        for key in ("AA_ci95", "BWT_ci95"):
            pool += [100 * v for v in metrics.get(key) or [] if isinstance(v, (int, float))]
        pool += [100 * v for row in metrics.get("acc_matrix") or [] for v in row if isinstance(v, (int, float))]
        for table in (run.collision, run.orthogonality):
            if table is not None:
                pool += [v for row in table.values for v in row if not math.isnan(v)]
                pool += [100 * v for row in table.values for v in row if not math.isnan(v)]
        pool += [run.train_time_s] if run.train_time_s is not None else []
    groups = method_groups(runs)
    for seeds_figures in groups.values():
        for subset in _subsets(sorted(seeds_figures)):
            for key in METRICS:
                values = [seeds_figures[s][key] for s in subset]
                if all(v is not None for v in values):
                    pool.append(statistics.mean(values))
                    pool += [statistics.stdev(values)] if len(values) > 1 else []
    for (parent_a, a), (parent_b, b) in itertools.permutations(groups, 2):
        if parent_a != parent_b:
            continue
        shared = sorted(set(groups[(parent_a, a)]) & set(groups[(parent_b, b)]))
        for key in METRICS:
            diffs = {s: _diff(groups[(parent_a, a)][s][key], groups[(parent_b, b)][s][key]) for s in shared}
            pool += [d for d in diffs.values() if d is not None]
            for subset in _subsets(shared):
                values = [diffs[s] for s in subset]
                if all(v is not None for v in values):
                    pool.append(statistics.mean(values))
                    pool += list(t_interval_95(values) or [])
    for table in folder.rglob("*.md"):
        if table.name != "README.md":
            pool += [float(n) for n in NUMBER.findall(table.read_text(encoding="utf-8"))]
    return pool


def _subsets(seeds: Sequence[int]) -> Iterator[tuple[int, ...]]:
    return (subset for size in range(1, len(seeds) + 1) for subset in itertools.combinations(seeds, size))


def _diff(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


# ----- check 1: tables --------------------------------------------------------------------------------
def table_cells(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, cell)`` of every numeric body cell of every Markdown table."""
    header_seen = False
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            header_seen = False
            continue
        if re.fullmatch(r"\|[\s:|-]+\|?", line.strip()):
            continue
        if not header_seen:
            header_seen = True  # the header row names columns; its numbers are labels
            continue
        for cell in line.strip().strip("|").split("|"):
            if NUMERIC_CELL.match(cell.strip()):
                yield number, cell.strip()


def matches(quoted: str, pool: Sequence[float]) -> bool:
    """Whether a figure of ``pool`` rounds to ``quoted`` at the number of decimals it is quoted with."""
    decimals = len(quoted.split(".")[1]) if "." in quoted else 0
    value, tolerance = float(quoted), 0.5 * 10 ** -decimals + 1e-9
    return any(abs(value - v) <= tolerance for v in pool)


def check_tables(readme: Path, pool: Sequence[float]) -> list[str]:
    errors = []
    for line, cell in table_cells(readme.read_text(encoding="utf-8")):
        wrong = [n for n in NUMBER.findall(cell) if not matches(n, pool)]
        if wrong:
            errors.append(f"{readme}:{line}: {', '.join(wrong)} (cell '{cell}') is no figure of the runs or tool tables")
    return errors


# ----- check 2: claims --------------------------------------------------------------------------------
class Skip(Exception):
    """A claim needs data that is not available here."""


def check_claims(readme: Path, claims: Sequence[Callable[..., list[str]]], folder: Path,
                 data_dir: Optional[Path]) -> tuple[list[str], list[str]]:
    """``(mismatches, skipped claims)``: each claim's sentences must occur in ``readme`` (whitespace aside)."""
    text = " ".join(readme.read_text(encoding="utf-8").split())
    errors, skipped = [], []
    for claim in claims:
        try:
            sentences = claim(folder, data_dir)
        except Skip as reason:
            skipped.append(f"{readme}: {claim.__name__} skipped ({reason})")
            continue
        except ValueError as error:
            errors.append(f"{readme}: {claim.__name__}: {error}")
            continue
        errors += [f"{readme}: {claim.__name__}: the README should say: \"{s}\""
                   for s in sentences if " ".join(s.split()) not in text]
    return errors, skipped


def signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}"


def interval(bounds: tuple[float, float], digits: int = 2) -> str:
    return f"[{signed(bounds[0], digits)}, {signed(bounds[1], digits)}]"


# ----- the claims of each README -------------------------------------------------------------------------
NAMES = {"seqlora": "SeqLoRA", "inclora": "IncLoRA", "olora": "O-LoRA", "nlora": "N-LoRA", "replay": "Replay", "ella": "ELLA",
         "ewc_lora": "EWC-LoRA", "lwf": "LwF", "migu": "MIGU", "gorp": "GORP", "ewc": "EWC"}
CORE = ("seqlora", "inclora", "olora", "nlora", "replay")
WORDS = ["no", "one", "two", "three", "four", "five"]


def by_method(folder: Path) -> dict[str, dict[int, dict[str, Optional[float]]]]:
    return {method: seeds for (parent, method), seeds in method_groups(find_runs(folder)).items() if parent == folder}


def final_test_labels(run: Path) -> list[list[str]]:
    """Per task, the gold labels of the samples scored after the last stage (from the run's predictions)."""
    metrics = json.loads((run / "cl_metrics.json").read_text())
    last = len(metrics["acc_matrix"]) - 1
    records = read_predictions(run)
    labels = []
    for task in metrics["tasks"]:
        scored = sorted((r for r in records if r["stage"] == last and r["task"] == task), key=lambda r: r["sample_id"])
        if not scored:
            raise Skip(f"{run}: no predictions of {task} after stage {last}")
        labels.append([r["label"] for r in scored])
    return labels


def best_constant_rates(folder: Path, seed: int) -> list[float]:
    """Per task, the share of the most frequent gold label among the scored test samples of ``seed``."""
    return [Counter(labels).most_common(1)[0][1] / len(labels) for labels in final_test_labels(folder / f"nlora-seed{seed}")]


def seeds_of(folder: Path) -> list[int]:
    return sorted(by_method(folder)["nlora"])


def claim_best_constant_answer(folder: Path, data_dir: Optional[Path]) -> list[str]:
    aa = {seed: 100 * statistics.mean(best_constant_rates(folder, seed)) for seed in seeds_of(folder)}
    if len({round(v, 6) for v in aa.values()}) != 1:
        raise ValueError(f"the best constant answer differs between seeds: {aa}")
    return [f"giving each task's most frequent test label (the best constant answer) scores AA {next(iter(aa.values())):.1f}"]


def claim_training_majority(folder: Path, data_dir: Optional[Path]) -> list[str]:
    if data_dir is None:
        raise Skip("needs --data-dir for train.json")
    from nlora_lightning.data.benchmark import load_instructions, load_task
    from nlora_lightning.data.splits import select_task_rows

    info = json.loads((folder / "nlora-seed0" / "run_info.json").read_text())
    hp, instructions = info["hyperparameters"], load_instructions(data_dir)
    scores, uniform, counts = defaultdict(list), [], []
    for index, name in enumerate(info["tasks"]):
        task = load_task(data_dir, name, instructions, on_unknown_label="keep")
        train, test = [r["label"] for r in task.records["train"]], [r["label"] for r in task.records["test"]]
        uniform.append(1 / len(task.labels))
        counts.append(str(len(task.labels)))
        for seed in seeds_of(folder):
            rows = select_task_rows(index, seed, train, test, hp["max_train_samples"], hp["max_eval_samples"])
            trained = Counter(train[i] for i in rows.train)
            majority = next(label for label in task.labels if trained[label] == max(trained.values()))  # ties: labels.json order
            scores[seed].append(sum(test[i] == majority for i in rows.evaluation) / len(rows.evaluation))
    aa = {seed: 100 * statistics.mean(values) for seed, values in scores.items()}
    if len({round(v, 6) for v in aa.values()}) != 1:
        raise ValueError(f"the training-majority baseline differs between seeds: {aa}")
    return [f"A uniform guess scores {100 * statistics.mean(uniform):.1f} % averaged over the {len(counts)} tasks' label counts "
            f"({', '.join(counts)})",
            f"answering the most frequent label of each task's {hp['max_train_samples']} training samples (ties: the first in "
            f"labels.json) scores AA {next(iter(aa.values())):.1f}"]


def claim_never_learned(folder: Path, data_dir: Optional[Path]) -> list[str]:
    counts, total = Counter(), Counter()
    tasks: list[str] = []
    for method, seeds in by_method(folder).items():
        for seed in seeds:
            rates = best_constant_rates(folder, seed)
            metrics = json.loads((folder / f"{method}-seed{seed}" / "cl_metrics.json").read_text())
            matrix, tasks = metrics["acc_matrix"], metrics["tasks"]
            n = len(final_test_labels(folder / f"nlora-seed{seed}")[0])  # test samples per task
            for j, task in enumerate(tasks):
                bar = rates[j] + 1.96 * math.sqrt(rates[j] * (1 - rates[j]) / n)
                for accuracy in (matrix[j][j], matrix[-1][j]):
                    total[task] += 1
                    counts[task] += accuracy <= bar + 1e-9
    never = [f"{task} {counts[task]}" for task in tasks if counts[task] >= 0.9 * total[task]]
    others = [f"{task} {counts[task]}" for task in tasks if counts[task] < 0.9 * total[task]]
    evaluations = total[tasks[0]]
    return [f"{len(never)} of the {len(tasks)} tasks are never learned: {', '.join(never[:-1])} and {never[-1]} of "
            f"{evaluations} evaluations are not above that bar",
            f"the other tasks fall below it in {', '.join(others[:-1])} and {others[-1]} of {evaluations}"]


def _mean_std(values: Sequence[float], digits: int) -> str:
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def claim_forgetting_ranking(folder: Path, data_dir: Optional[Path]) -> list[str]:
    bwt = {m: [f["BWT"] for f in seeds.values()] for m, seeds in by_method(folder).items()}
    ranked = sorted(bwt, key=lambda m: -statistics.mean(bwt[m]))
    first, second = ranked[0], ranked[1]
    return [f"BWT +{_mean_std(bwt[second], 2)}, the second-highest mean of the study after {NAMES[first]}'s "
            f"{signed(statistics.mean(bwt[first]))}",
            f"SeqLoRA's BWT is {_mean_std(bwt['seqlora'], 1)}"]


def _paired(folder: Path, key: str) -> dict[str, tuple[float, tuple[float, float]]]:
    methods = by_method(folder)
    out = {}
    for method, seeds in methods.items():
        shared = sorted(set(seeds) & set(methods["nlora"]))
        if method != "nlora" and len(shared) > 1:
            diffs = [methods["nlora"][s][key] - seeds[s][key] for s in shared]
            out[method] = (statistics.mean(diffs), t_interval_95(diffs))
    return out


def claim_intervals_excluding_zero(folder: Path, data_dir: Optional[Path]) -> list[str]:
    sentences = []
    for key in ("AA", "BWT"):
        excluding = {m: v for m, v in _paired(folder, key).items() if v[1][0] > 0 or v[1][1] < 0}
        sentences += [f"({signed(mean)} {interval(bounds)})" if key == "AA" else
                      f"On BWT only {NAMES[m]} differs (N-LoRA - {NAMES[m]} {signed(mean)} {interval(bounds)})"
                      for m, (mean, bounds) in excluding.items()]
        if key == "AA":
            sentences.append(f"{WORDS[len(excluding)].capitalize()} methods differ from it over seeds")
    widths = [(b[1] - b[0]) / 2 for _, b in _paired(folder, "AA").values()]
    sentences.append(f"half-widths of {min(widths):.1f} to {max(widths):.1f} points (median {statistics.median(widths):.1f})")
    return sentences


def claim_own_task(folder: Path, data_dir: Optional[Path]) -> list[str]:
    methods = by_method(folder)
    own = {m: [f["own"] for f in methods[m].values()] for m in CORE}
    nlora = statistics.mean(own["nlora"])
    above = sorted((m for m in CORE if statistics.mean(own[m]) > nlora), key=lambda m: -statistics.mean(own[m]))
    spread = max(CORE, key=lambda m: statistics.stdev(own[m]))
    seed2 = {m: methods[m][2]["own"] for m in CORE}
    higher2 = [m for m in CORE if seed2[m] > seed2["nlora"]]
    lower2 = [m for m in CORE if seed2[m] < seed2["nlora"]]
    if len(higher2) != 1 or len(lower2) < 2:
        raise ValueError(f"seed 2 own-task means {seed2}: the sentence assumes one core method above N-LoRA's")
    if not above or above[0] != "seqlora" or spread != "seqlora":
        raise ValueError(f"own-task means {own}: the sentence assumes SeqLoRA learns most, with the largest spread")
    described = [f"{NAMES[m]} ({_mean_std(own[m], 1)})" for m in above]
    described[0] = f"SeqLoRA's single shared adapter ({_mean_std(own['seqlora'], 1)}, the largest spread)"
    return [f"at seed 2 its own-task mean ({seed2['nlora']:.1f}) is above " + ", ".join(f"{NAMES[m]}'s" for m in lower2[:-1])
            + f" and {NAMES[lower2[-1]]}'s (" + ", ".join(f"{seed2[m]:.1f}" for m in lower2) + ")"
            + f", though below {NAMES[higher2[0]]}'s ({seed2[higher2[0]]:.1f})",
            f"{WORDS[len(above)].capitalize()} methods learn more on average",
            ", ".join(described[:-1]) + f" and {described[-1]}"]


def claim_collision_ranges(folder: Path, data_dir: Optional[Path]) -> list[str]:
    methods = by_method(folder)
    nlora = [f["collision"] for f in methods["nlora"].values()]
    others = [f["collision"] for m in CORE if m != "nlora" for f in methods[m].values()]
    return [f"N-LoRA's collision is {min(nlora):.1f} to {max(nlora):.1f} % against {min(others):.1f} to {max(others):.1f} %"]


def claim_nlora_collision_per_seed(folder: Path, data_dir: Optional[Path]) -> list[str]:
    values = [f["collision"] for f in by_method(folder)["nlora"].values()]
    others = [f["collision"] for m, seeds in by_method(folder).items() if m in ("seqlora", "inclora", "olora") for f in seeds.values()]
    return [f"{min(values):.1f}-{max(values):.0f} % for N-LoRA on all {WORDS[len(values)]} seeds against "
            f"{min(others):.0f}-{max(others):.0f} % for every other method"]


CLAIMS: dict[str, list[Callable[[Path, Optional[Path]], list[str]]]] = {
    "long_order4": [claim_best_constant_answer, claim_training_majority, claim_never_learned, claim_forgetting_ranking,
                    claim_intervals_excluding_zero, claim_own_task, claim_collision_ranges],
    "real_data": [claim_nlora_collision_per_seed],
}


def default_folders() -> list[Path]:
    return sorted(path.parent for path in RESULTS.rglob("README.md"))


def check_folder(folder: Path, data_dir: Optional[Path]) -> tuple[list[str], list[str]]:
    readme = folder / "README.md"
    runs = find_runs(folder)
    errors = check_tables(readme, number_pool(folder, runs))
    key = folder.resolve().relative_to(RESULTS.resolve()).as_posix() if folder.resolve().is_relative_to(RESULTS.resolve()) else None
    claim_errors, skipped = check_claims(readme, CLAIMS.get(key, []), folder, data_dir)
    return errors + claim_errors, skipped


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="results folders with a README.md (default: all)")
    parser.add_argument("--data-dir", type=Path, default=None, help="CL_Benchmark folder, for the claims that need train.json")
    args = parser.parse_args(argv)
    folders = args.folders or default_folders()
    missing = [str(f) for f in folders if not (f / "README.md").is_file()]
    if missing:
        parser.error(f"no README.md in {', '.join(missing)}")
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a directory")
    errors, skipped = [], []
    for folder in folders:
        found, passed_over = check_folder(folder, args.data_dir)
        errors += found
        skipped += passed_over
    for line in skipped:
        print(f"[skip] {line}")
    for line in errors:
        print(f"[mismatch] {line}")
    print(f"{len(folders)} README(s), {len(errors)} mismatch(es), {len(skipped)} claim(s) skipped")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
