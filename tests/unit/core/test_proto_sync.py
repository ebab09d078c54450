"""The committed messaging/core/pb code matches proto/, and the wire schema keeps its field numbers."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from google.protobuf.descriptor import FieldDescriptor

from messaging.core.pb import MessageDataPB_pb2 as pb
from messaging.core.types import Protocol
from tests.paths import REPO_ROOT


def _load_gen_proto() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_proto", REPO_ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_code_is_what_protoc_generates(tmp_path: Path) -> None:
    gen_proto = _load_gen_proto()
    generated = gen_proto.generate(out_dir=tmp_path)
    assert [p.name for p in generated] == ["MessageDataPB_pb2.py"]
    for path in generated:
        committed = REPO_ROOT / "messaging" / "core" / "pb" / path.name
        assert path.read_bytes() == committed.read_bytes(), (
            f"{committed} is stale: run .venv/bin/python scripts/gen_proto.py"
        )


def _fields(message_type) -> dict[str, tuple[int, int, bool, bool]]:
    return {f.name: (f.number, f.type, f.is_required, f.is_repeated) for f in message_type.DESCRIPTOR.fields}


def test_wire_schema_is_what_devices_in_the_field_speak() -> None:
    assert _fields(pb.Message) == {
        "text": (1, FieldDescriptor.TYPE_STRING, True, False),
        "to": (3, FieldDescriptor.TYPE_STRING, True, False),
        "protocol": (5, FieldDescriptor.TYPE_ENUM, True, False),
    }
    assert _fields(pb.MessageDataPB) == {
        "version": (1, FieldDescriptor.TYPE_UINT32, True, False),
        "message": (2, FieldDescriptor.TYPE_MESSAGE, False, True),
        "from_device": (3, FieldDescriptor.TYPE_BOOL, True, False),
    }
    assert dict(pb.Protocol.items()) == {"UNKNOWN": 0, "EMAIL": 1, "SMS": 2, "TWITTER": 3}


def test_python_protocol_enum_matches_the_proto_enum() -> None:
    assert {p.name: p.value for p in Protocol} == dict(pb.Protocol.items())


def test_known_device_bytes_still_parse() -> None:
    # version=1, message{text="hi", to="a@b", protocol=EMAIL}, from_device=true, written out by hand.
    raw = bytes.fromhex("0801" + "120b" + "0a026869" + "1a03614062" + "2801" + "1801")
    packet = pb.MessageDataPB.FromString(raw)
    assert packet.IsInitialized()
    assert (packet.version, packet.from_device) == (1, True)
    assert [(m.text, m.to, m.protocol) for m in packet.message] == [("hi", "a@b", pb.EMAIL)]
    assert packet.SerializeToString() == raw


def test_generated_classes_live_in_the_package_so_they_pickle() -> None:
    packet = pb.MessageDataPB(version=1, from_device=True)
    packet.message.add(text="x", to="+15550001111", protocol=pb.SMS)
    assert type(packet).__module__ == "messaging.core.pb.MessageDataPB_pb2"
    assert pickle.loads(pickle.dumps(packet)) == packet


def test_generated_module_imports_cleanly_with_the_installed_runtime() -> None:
    """The gencode/runtime version check passes, and emits no warning either (fresh interpreter)."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import messaging.core.pb.MessageDataPB_pb2"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
