from concurrent.futures import ThreadPoolExecutor

import pytest

from keiko.errors import RegistryError
from keiko.registry import open_registry


@pytest.fixture
def registry(tmp_path):
    return open_registry(f"sqlite:///{tmp_path / 'registry.db'}")


def register(registry, sha, *, window=("2026-11-15", "2026-11-21"), status="registered", model="ctr"):
    return registry.register(
        model=model,
        ds=window[1],
        window_start=window[0],
        window_end=window[1],
        artifact_uri=f"file:///a/{sha}.npz",
        artifact_sha256=sha,
        code_version="0.1.0+abc",
        config_sha256="c" * 64,
        features_sha256="f" * 64,
        algorithm="hashed_logistic_regression",
        metrics={"test": {"logloss": 0.12}},
        status=status,
    )


def test_versions_are_monotonic_per_model(registry):
    assert [register(registry, s).version.version for s in ("a", "b", "c")] == [1, 2, 3]
    assert register(registry, "a", model="cvr").version.version == 1


def test_a_retry_returns_the_existing_version(registry):
    first = register(registry, "a")
    again = register(registry, "a")
    assert first.created and not again.created
    assert again.version.version == first.version.version
    assert len(registry.list("ctr")) == 1
    # Same artifact over another window is another version.
    assert register(registry, "a", window=("2026-11-16", "2026-11-22")).version.version == 2


def test_lineage_is_stored(registry):
    register(registry, "a")
    entry = registry.get("ctr", 1)
    assert (entry.window_start, entry.window_end) == ("2026-11-15", "2026-11-21")
    assert entry.artifact_sha256 == "a" and entry.code_version == "0.1.0+abc"
    assert entry.metrics == {"test": {"logloss": 0.12}}
    with pytest.raises(RegistryError, match="no version 9"):
        registry.get("ctr", 9)


def test_concurrent_registrations_get_distinct_versions(registry):
    with ThreadPoolExecutor(max_workers=10) as pool:
        versions = list(pool.map(lambda i: register(registry, f"sha{i}").version.version, range(10)))
    assert sorted(versions) == list(range(1, 11))


def test_production_alias_moves_and_remembers_the_previous(registry):
    for sha in ("a", "b"):
        register(registry, sha)
    assert registry.alias("ctr") is None
    assert registry.move_alias("ctr", 1) is None
    assert registry.move_alias("ctr", 2, expected=1) == 1
    assert registry.alias("ctr") == 2 and registry.previous("ctr") == 1
    assert [(h["from_version"], h["to_version"]) for h in registry.history("ctr")] == [(None, 1), (1, 2)]


def test_conditional_alias_move_refuses_a_stale_view(registry):
    for sha in ("a", "b", "c"):
        register(registry, sha)
    registry.move_alias("ctr", 1)
    registry.move_alias("ctr", 2, expected=1)
    with pytest.raises(RegistryError, match="moved concurrently"):
        registry.move_alias("ctr", 3, expected=1)
    assert registry.alias("ctr") == 2


def test_rejected_versions_never_become_production(registry):
    register(registry, "a", status="rejected")
    with pytest.raises(RegistryError, match="is rejected"):
        registry.move_alias("ctr", 1)
    assert registry.alias("ctr") is None
