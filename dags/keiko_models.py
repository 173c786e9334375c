"""Airflow DAG file: one DAG `keiko_<model>` per include/models/<model>/ (built by keiko.dag_factory)."""

from keiko.dag_factory import build_dags

globals().update(build_dags())
