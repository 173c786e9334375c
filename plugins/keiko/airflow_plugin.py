"""keiko's Airflow plugin: serves the run pages on the API server (keiko.run_pages).

Registered as an `airflow.plugins` entry point (pyproject.toml), so Airflow finds it wherever the keiko
package is installed: the checkout's venv and the image alike (the image has no plugins folder).
"""

from airflow.plugins_manager import AirflowPlugin

from keiko.operators.links import RUN_PAGES_PREFIX
from keiko.run_pages import app


class KeikoPlugin(AirflowPlugin):
    name = "keiko"
    fastapi_apps = [{"app": app, "url_prefix": RUN_PAGES_PREFIX, "name": "keiko run pages"}]  # noqa: RUF012 - as AirflowPlugin declares it
