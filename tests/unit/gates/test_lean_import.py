"""Gates import Great Expectations without the back ends pandas suites never use, and it still validates."""

import subprocess
import sys
import textwrap

# In a fresh interpreter: the test process has imported sqlalchemy and scipy already.
PROBE = textwrap.dedent(
    """
    import sys
    import keiko.gates  # installs the lean import
    import great_expectations as gx
    from great_expectations.execution_engine import pandas_execution_engine
    from keiko.gates.lean_import import HIDDEN, Deferred
    print("hidden imported:", sorted(name for name in HIDDEN if name in sys.modules))
    print("deferred:", type(sys.modules["scipy.stats"]) is Deferred, type(sys.modules["altair"]) is Deferred)
    print("fingerprint threshold:", pandas_execution_engine.HASH_THRESHOLD)
    import pandas as pd
    import sqlalchemy  # not hidden once GE is imported: keiko's SQL registry needs it
    context = gx.get_context(mode="ephemeral")
    batch = context.data_sources.add_pandas("p").add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
    kl = gx.expectations.ExpectColumnKLDivergenceToBeLessThan(
        column="c", partition_object={"values": ["x", "y"], "weights": [0.5, 0.5]}, threshold=0.1
    )
    suite = context.suites.add(gx.ExpectationSuite(name="s", expectations=[kl]))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="v", data=batch, suite=suite))
    result = definition.run(batch_parameters={"dataframe": pd.DataFrame({"c": ["x", "y"] * 50})})
    print("kl:", result.success, result.results[0].result["observed_value"])
    print("scipy.stats loaded:", type(sys.modules["scipy.stats"]).__name__, sqlalchemy.__name__)
    """
)


def test_great_expectations_imports_lean_and_loads_the_deferred_modules_on_use():
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    assert lines[:3] == ["hidden imported: []", "deferred: True True", "fingerprint threshold: 0"]
    assert lines[3] == "kl: True 0.0"  # scipy.stats.entropy ran through its stand-in
    assert lines[4] == "scipy.stats loaded: module sqlalchemy"
