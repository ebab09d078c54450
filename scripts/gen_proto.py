"""Regenerate messaging/core/pb/*_pb2.py from proto/*.proto with grpc_tools.protoc.

Usage: ``.venv/bin/python scripts/gen_proto.py [OUT_DIR]`` (default: messaging/core/pb).

protoc names the generated Python module after the .proto path relative to the
include root. So that generated classes report ``messaging.core.pb.X_pb2`` as their
module (needed to pickle them, e.g. across Ray actors), each source is staged as
``messaging/core/pb/X.proto`` in a temp include root before running protoc.

tests/unit/core/test_proto_sync.py calls :func:`generate` into a temp dir and compares
the result with the committed files byte for byte.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "proto"
DEFAULT_OUT_DIR = REPO_ROOT / "messaging" / "core" / "pb"
PACKAGE_PATH = Path("messaging", "core", "pb")


def proto_files(proto_dir: Path = PROTO_DIR) -> list[Path]:
    """The .proto sources, sorted so generation order is stable."""
    return sorted(proto_dir.glob("*.proto"))


def generate(out_dir: Path = DEFAULT_OUT_DIR, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Run protoc on every .proto in ``proto_dir``; write and return ``out_dir/X_pb2.py`` files."""
    sources = proto_files(proto_dir)
    if not sources:
        raise FileNotFoundError(f"no .proto files in {proto_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="gen_proto_") as tmp:
        include_root = Path(tmp, "src")
        build_root = Path(tmp, "build")
        (include_root / PACKAGE_PATH).mkdir(parents=True)
        build_root.mkdir()
        for source in sources:
            shutil.copyfile(source, include_root / PACKAGE_PATH / source.name)
        args = [
            "grpc_tools.protoc",
            f"--proto_path={include_root}",
            f"--proto_path={well_known}",
            f"--python_out={build_root}",
            *(str(PACKAGE_PATH / s.name) for s in sources),
        ]
        status = protoc.main(args)
        if status != 0:
            raise RuntimeError(f"protoc failed with exit status {status}")
        for source in sources:
            name = f"{source.stem}_pb2.py"
            target = out_dir / name
            shutil.copyfile(build_root / PACKAGE_PATH / name, target)
            written.append(target)
    return written


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT_DIR
    for path in generate(out_dir):
        print(f"generated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
