"""The tasks of every model's DAG, in order: (task id, kind). Shared by the DAG factory and model.yaml checks."""

from __future__ import annotations

PIPELINE = (
    ("extract", "stage"),
    ("gate_raw", "gate"),
    ("features", "stage"),
    ("gate_features", "gate"),
    ("train", "stage"),
    ("gate_training", "gate"),
    ("evaluate", "stage"),
    ("gate_evaluation", "gate"),
    ("register", "stage"),
    ("deploy", "stage"),
    ("gate_serving", "gate"),
)
TASK_IDS = tuple(task_id for task_id, _ in PIPELINE)
