"""The inference protocol's compiled descriptor set is what `make protos` makes of the committed .proto."""

import subprocess
import sys

from conftest import ROOT
from keiko.serving.protos import DESCRIPTOR_SET, METHODS


def test_the_descriptor_set_is_current(tmp_path):
    fresh = tmp_path / "fresh.binpb"
    proto = DESCRIPTOR_SET.relative_to(ROOT / "plugins").with_suffix(".proto")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", ROOT / "plugins", f"--descriptor_set_out={fresh}", proto],
        check=True,
    )
    assert fresh.read_bytes() == DESCRIPTOR_SET.read_bytes(), "run `make protos` and commit the result"


def test_it_holds_the_protocols_six_rpcs():
    assert sorted(METHODS) == [
        "ModelInfer",
        "ModelMetadata",
        "ModelReady",
        "ServerLive",
        "ServerMetadata",
        "ServerReady",
    ]
