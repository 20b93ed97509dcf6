"""Import cost: the callbacks and the pure math load without the model-loading code (issue 13, item 3).

One subprocess imports, in order, the math, Lightning, the callbacks and the top-level names, and
reports ``sys.modules`` after each step; the tests read that record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MODEL_CODE = ("transformers", "peft", "datasets", "nlora_lightning.module", "nlora_lightning.models")

_SCRIPT = """
import json, sys
steps = {}
def snap(name):
    steps[name] = sorted(sys.modules)
import nlora_lightning.regularizers, nlora_lightning.regularizers.functional, nlora_lightning.methods
import nlora_lightning.metrics, nlora_lightning.metrics.functional
import nlora_lightning.analysis, nlora_lightning.lora
snap("math")
import lightning.pytorch
snap("lightning")
import nlora_lightning.callbacks
snap("callbacks")
from nlora_lightning import ContinualLightningModule, TaskSequenceDataModule, LoRAConfig
from nlora_lightning.metrics import AccuracyMatrix
steps["names"] = [ContinualLightningModule.__module__, TaskSequenceDataModule.__name__, AccuracyMatrix.__name__]
print(json.dumps(steps))
"""


@pytest.fixture(scope="module")
def imported() -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _matching(names, prefixes) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


def test_pure_math_imports_without_transformers_or_lightning(imported):
    assert "nlora_lightning.methods.nlora_l1" in imported["math"]
    assert _matching(imported["math"], MODEL_CODE + ("lightning", "torchmetrics")) == []


def test_callbacks_import_nothing_beyond_lightning(imported):
    # Lightning imports torchmetrics, which imports transformers' (lazy) top level when it is installed;
    # the callbacks must add nothing of their own: no model code, no peft, no datasets.
    added = set(imported["callbacks"]) - set(imported["lightning"])
    assert "nlora_lightning.callbacks.freeze_previous_adapters" in added
    assert _matching(added, MODEL_CODE) == []


def test_top_level_names_load_on_first_use(imported):
    assert "nlora_lightning.module" not in imported["callbacks"]
    assert imported["names"] == ["nlora_lightning.module", "TaskSequenceDataModule", "AccuracyMatrix"]
