import filecmp
import json

from nlora_lightning.data.toy import TOY_BENCHMARK_DIR, TOY_TASKS, generate_toy_benchmark


def test_shipped_toy_benchmark_is_reproducible(tmp_path):
    generate_toy_benchmark(tmp_path)
    shipped = sorted(p.relative_to(TOY_BENCHMARK_DIR) for p in TOY_BENCHMARK_DIR.rglob("*.json"))
    regenerated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json"))
    assert shipped == regenerated
    for rel in shipped:
        assert filecmp.cmp(TOY_BENCHMARK_DIR / rel, tmp_path / rel, shallow=False), rel


def test_toy_tasks_have_disjoint_labels_and_no_train_test_overlap():
    seen_labels = set()
    for task in TOY_TASKS:
        folder = next(TOY_BENCHMARK_DIR.glob(f"*/{task}"))
        labels = json.loads((folder / "labels.json").read_text())
        assert not seen_labels & set(labels)
        seen_labels |= set(labels)
        train = {r["sentence"] for r in json.loads((folder / "train.json").read_text())}
        test = {r["sentence"] for r in json.loads((folder / "test.json").read_text())}
        assert not train & test
