"""Great Expectations gates, one module per suite (keiko.pipeline lists them): each validates what the
step before it wrote and returns its verdict (keiko.contract.GateResult); `keiko gate <suite> --model M --ds D`.

Great Expectations is imported only inside gate processes: never at DAG parse, never by stages; and then
only with what pandas suites need (keiko.gates.lean_import, installed here). The Airflow GX provider is not
used: airflow-provider-great-expectations 1.0.0 pins structlog < 25.5 (Airflow 3.3 needs >= 26.1) and its
operator loads data in the worker that parses the DAG; running suites through keiko's step runner keeps them
next to the data.
"""

from keiko.gates import lean_import

lean_import.install()
