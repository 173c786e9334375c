import pytest

from keiko.errors import KeikoError, ModelConfigError
from keiko.modeldef import load_model, model_names


def test_shipped_ctr_definition_is_valid():
    ctr = load_model("ctr")
    assert ctr.config.label == "clicked"
    assert ctr.sql_path.is_file()
    assert ctr.config_sha256 and ctr.features_sha256
    assert "ctr" in model_names()


def _write(project, text):
    (project / "include" / "models" / "ctr" / "model.yaml").write_text(text)


def test_invalid_field_error_names_the_file_and_the_field(project_copy):
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    _write(project_copy, path.read_text().replace("min_auc: 0.65", "min_auc: high"))
    with pytest.raises(ModelConfigError) as error:
        load_model("ctr")
    assert str(path) in str(error.value)
    assert "thresholds.min_auc" in str(error.value)


def test_unknown_fields_are_refused_not_ignored(project_copy):
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    _write(project_copy, path.read_text() + "windw_days: 3\n")
    with pytest.raises(ModelConfigError, match="windw_days: Extra inputs are not permitted"):
        load_model("ctr")


def test_bad_cron_and_bad_yaml(project_copy):
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    original = path.read_text()
    _write(project_copy, original.replace('schedule: "0 2 * * *"', 'schedule: "every night"'))
    with pytest.raises(ModelConfigError, match="schedule"):
        load_model("ctr")
    _write(project_copy, "owner: [unclosed\n")
    with pytest.raises(ModelConfigError, match="not valid YAML"):
        load_model("ctr")


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(KeikoError, match=r"unknown model 'nope'.*known models: .*\bctr\b"):
        load_model("nope")
    with pytest.raises(KeikoError, match="invalid model name"):
        load_model("../etc")


def test_pod_settings_merge_over_default_and_refuse_typos(project_copy):
    config = load_model("ctr").config
    assert config.pod("gate_serving") == config.pods["default"]
    train = config.pod("train")
    assert train.requests["cpu"] == "2" and train.node_selector  # its own entry over default
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    original = path.read_text()
    _write(project_copy, original.replace("  evaluate: {requests", "  evaluat: {requests"))
    with pytest.raises(ModelConfigError, match=r"pods: Value error, unknown task evaluat; expected default or"):
        load_model("ctr")
    _write(project_copy, original.replace("cpu: 500m, memory: 1Gi", "cpu: 500m, memory: 1 GB"))
    with pytest.raises(ModelConfigError, match=r"memory: '1 GB' is not a Kubernetes quantity"):
        load_model("ctr")


def test_an_unknown_algorithm_fails_at_parse_naming_the_known_ones(project_copy):
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    _write(project_copy, path.read_text().replace("name: hashed_logistic_regression", "name: xgboost"))
    with pytest.raises(ModelConfigError, match=r"algorithm.name: .*unknown algorithm 'xgboost'; known: hashed_log"):
        load_model("ctr")


def test_models_serve_on_ports_no_other_model_uses():
    """Each model's replicas take serving.port .. port + replicas - 1; two models sharing one would load each
    other's versions (the local rollout refuses a replica that names another model, but only at deploy)."""
    taken: dict[int, str] = {}
    for name in model_names():
        serving = load_model(name).config.serving
        for first in (serving.port, serving.grpc_port):  # REST, and the inference protocol's gRPC
            for port in range(first, first + serving.replicas) if first else ():
                assert port not in taken, f"{name} and {taken[port]} both serve on port {port}"
                taken[port] = name
