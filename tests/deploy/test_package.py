"""The wheel the image installs holds every file the package reads beside its modules."""

import fnmatch
import tomllib

from conftest import ROOT

PACKAGE = ROOT / "plugins" / "keiko"


def test_every_file_beside_the_modules_is_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["keiko"]
    data = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    ]
    assert data, "the package reads files beside its modules (the run page's template, the protos)"
    missing = [name for name in data if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns)]
    assert missing == [], f"not in pyproject.toml's [tool.setuptools.package-data]: {missing}"
