"""keiko: keeps production ML models fresh (one Airflow DAG per model)."""

__version__ = "0.1.0"
