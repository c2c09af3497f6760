"""Regenerate the protobuf/gRPC Python modules: ``python proto/generate.py``.

Run from anywhere. ``-Iproto`` makes the import paths inside the generated
code ``registry.v1`` / ``registry.compat``, so the modules land inside our
package (registry/v1/registry_pb2.py, registry/compat/rpcserver_pb2.py) and
no top-level ``proto`` package ever becomes importable.
"""

from __future__ import annotations

import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ("registry/v1/registry.proto", "registry/compat/rpcserver.proto")


def main() -> int:
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    for proto in PROTOS:
        args = [
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"-I{include}",
            f"--python_out={ROOT}",
            f"--pyi_out={ROOT}",
            f"--grpc_python_out={ROOT}",
            str(ROOT / "proto" / proto),
        ]
        if protoc.main(args) != 0:
            print(f"protoc failed on {proto}", file=sys.stderr)
            return 1
    for package in ("registry/v1", "registry/compat"):
        init = ROOT / package / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated protobuf/gRPC modules (python proto/generate.py)."""\n')
    return 0


if __name__ == "__main__":
    sys.exit(main())
