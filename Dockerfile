# keiko's one image, `keiko:latest`: the Airflow components, the stage pods and the model server.
#
# It is the official Airflow image plus keiko's locked dependencies, the keiko package, include/ (model
# definitions, SQL) and dags/ under /opt/keiko. The ENTRYPOINT stays the official one
# (`dumb-init -- /entrypoint`), so each use starts it like this:
#
#   Airflow components  the Airflow subcommand is the command, as in the official image and
#                       docker-compose.yaml: `docker run keiko:latest scheduler` (also api-server,
#                       dag-processor, triggerer, `celery worker`). /entrypoint waits for the metadata
#                       database (and for the Celery broker), then runs `airflow <command>`.
#   Stage pods          KubernetesPodOperator sets the container's command to `keiko stage <name> --model M
#                       --ds D` (or `keiko gate <suite> ...`). A Kubernetes `command` replaces the
#                       ENTRYPOINT: keiko runs directly, without /entrypoint's database wait.
#   Model server        deploy/k8s/ctr-server.yaml's `command: ["keiko", "serve", "--model", "ctr", "--host",
#                       "0.0.0.0", "--port", "8601", "--replicas", "1"]` replaces the ENTRYPOINT the same way;
#                       docker-compose.yaml does the same with `entrypoint: ["/usr/bin/dumb-init", "--"]` and
#                       that command.
#
# Not `docker run keiko:latest keiko serve ...`: /entrypoint would run `airflow keiko serve`. Outside
# Kubernetes and compose, replace the entrypoint: `docker run --entrypoint keiko keiko:latest serve ...`.
#
# Build: `docker build -t keiko:latest .` (or `docker compose build`). One stage: the base image already
# holds Python and a compiler-free venv, and every locked dependency installs from a wheel.

# The Airflow version in the tag must equal the apache-airflow pin in requirements.txt (checked below and by
# tests/deploy/test_compose.py); the Python version equals the lock's (--python 3.11).
FROM apache/airflow:3.3.2-python3.11

SHELL ["/bin/bash", "-o", "pipefail", "-o", "errexit", "-o", "nounset", "-c"]

USER 0
# /opt/keiko: the project files (read-only to the runtime user). /var/lib/keiko/warehouse: where compose
# mounts the synthetic DuckDB warehouse; a new named volume takes this directory's owner and mode, so the
# airflow user (and any UID of group 0, the official image's convention) can write it.
# /tmp/keiko-src: the package's sources while pip builds it (in-tree: the airflow user must write there).
RUN install -d -o root -g 0 -m 0755 /opt/keiko \
    && install -d -o 50000 -g 0 -m 2775 /var/lib/keiko /var/lib/keiko/warehouse \
    && install -d -o 50000 -g 0 -m 0755 /tmp/keiko-src /tmp/keiko-src/plugins
USER 50000

# The locked dependencies, the official "extend the image" way: pip as the airflow user into the image's
# venv, no cache. requirements.txt pins apache-airflow itself; naming apache-airflow==$AIRFLOW_VERSION (the
# base image sets it) as well keeps the resolver from ever moving Airflow away from the base image's version,
# and the grep fails the build at once if the lock and the FROM tag disagree.
COPY requirements.txt /opt/keiko/requirements.txt
RUN grep -qx "apache-airflow==${AIRFLOW_VERSION}" /opt/keiko/requirements.txt \
        || { echo "requirements.txt does not pin apache-airflow==${AIRFLOW_VERSION} (the base image's)" >&2; exit 1; } \
    && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/keiko/requirements.txt

# The keiko package, non-editable (a regular install into the venv; plugins/ itself is not in the image).
# --no-deps: requirements.txt has every dependency; --no-build-isolation: setuptools comes from the lock.
COPY --chown=airflow:0 pyproject.toml /tmp/keiko-src/pyproject.toml
COPY --chown=airflow:0 plugins/keiko /tmp/keiko-src/plugins/keiko
RUN pip install --no-cache-dir --no-deps --no-build-isolation /tmp/keiko-src \
    && rm -rf /tmp/keiko-src \
    && keiko --help > /dev/null
# The base image ships Airflow without bytecode. Stage pods and model servers run on a read-only root
# filesystem where Python cannot cache it, so every process would recompile what it imports: compile once.
RUN python -m compileall -q -j 0 "$(python -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("airflow").origin))')"

# Data Docs' tables (keiko.gates.data_docs): bootstrap-table, on neither PyPI nor Debian, from the npm registry's
# tarball as `make install` takes it (the Makefile's version and sha512; tests/deploy/test_compose.py checks they
# agree), under the image Python's sys.prefix/share/keiko, where data_docs looks.
ARG BOOTSTRAP_TABLE_VERSION=1.19.1
ARG BOOTSTRAP_TABLE_SHA512=5af57e975008fc2fb34e168a99f1e68bf22e6b254d074a9d172121171d63c9984ed282ed349340364091debbc97fa0e487bd9db0b125c6913f6f32bdb1e1102c
USER 0
RUN target="$(python -c 'import sys; print(sys.prefix)')/share/keiko/bootstrap-table-${BOOTSTRAP_TABLE_VERSION}" \
    && curl -fsSL -o /tmp/bootstrap-table.tgz \
        "https://registry.npmjs.org/bootstrap-table/-/bootstrap-table-${BOOTSTRAP_TABLE_VERSION}.tgz" \
    && echo "${BOOTSTRAP_TABLE_SHA512}  /tmp/bootstrap-table.tgz" | sha512sum --check --quiet \
    && install -d "$target" \
    && tar -xzmf /tmp/bootstrap-table.tgz -C "$target" --strip-components=1 package/LICENSE \
        package/dist/bootstrap-table.min.css package/dist/bootstrap-table.min.js \
        package/dist/extensions/filter-control/bootstrap-table-filter-control.min.css \
        package/dist/extensions/filter-control/bootstrap-table-filter-control.min.js \
    && rm /tmp/bootstrap-table.tgz
USER 50000

COPY include/ /opt/keiko/include/
COPY dags/ /opt/keiko/dags/

ENV KEIKO_PROJECT_DIR=/opt/keiko \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/keiko/dags

# The official image's airflow user, numeric so that Kubernetes' runAsNonRoot can verify it. Run it as any
# UID with group 0 (the official image's convention; deploy/k8s runs 50000:0): the venv in /home/airflow/.local
# and /opt/airflow are group-0 accessible.
USER 50000
