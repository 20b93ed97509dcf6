"""Data: the CL_Benchmark layout, the prompt template, tokenisation, samplers and the data module."""

from nlora_lightning.data.benchmark import PRESETS, TaskData, load_task, resolve_task_names
from nlora_lightning.data.datamodule import ReplayConfig, TaskSequenceDataModule
from nlora_lightning.data.templates import build_prompt
from nlora_lightning.data.toy import TOY_BENCHMARK_DIR, TOY_TASKS, generate_toy_benchmark

__all__ = [
    "PRESETS",
    "ReplayConfig",
    "TOY_BENCHMARK_DIR",
    "TOY_TASKS",
    "TaskData",
    "TaskSequenceDataModule",
    "build_prompt",
    "generate_toy_benchmark",
    "load_task",
    "resolve_task_names",
]
