"""Regenerate k8s/schemas/raycluster-v1.schema.json from KubeRay's RayCluster CRD.

Usage (from the repo root)::

    .venv/bin/python k8s/schemas/extract_kuberay_schema.py \
        --crd /path/to/kuberay/ray-operator/config/crd/bases/ray.io_rayclusters.yaml

Takes ``spec.versions[name=v1].schema.openAPIV3Schema`` and shrinks it losslessly: every
subtree that appears more than once and is large (the pod template of the head and worker
groups, the container schema used for containers / initContainers, ...) is moved to
``$defs`` once and replaced by ``{"$ref": "#/$defs/<name>"}``. Validation results are the
same as with the full schema. The output is deterministic (sorted keys).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

MIN_SHARED_CHARS = 200
DEFAULT_OUT = Path(__file__).with_name("raycluster-v1.schema.json")


def canonical(node: Any) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"))


def v1_schema(crd: dict[str, Any]) -> dict[str, Any]:
    """The openAPIV3Schema of the served, stored v1 version of a CRD."""
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def _subtrees(node: Any, path: str, seen: dict[str, list[str]]) -> None:
    if isinstance(node, dict):
        if len(canonical(node)) >= MIN_SHARED_CHARS:
            seen.setdefault(canonical(node), []).append(path)
        for key, value in node.items():
            _subtrees(value, f"{path}.{key}", seen)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _subtrees(value, f"{path}[{index}]", seen)


def _def_name(path: str, text: str) -> str:
    parts = [p for p in path.replace("[", ".").replace("]", "").split(".") if p and p != "properties"]
    tail = "_".join(parts[-2:]) if parts else "root"
    return f"{tail}_{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _replace(node: Any, text: str, ref: dict[str, str]) -> Any:
    if isinstance(node, dict):
        if canonical(node) == text:
            return dict(ref)
        return {key: _replace(value, text, ref) for key, value in node.items()}
    if isinstance(node, list):
        return [_replace(value, text, ref) for value in node]
    return node


def dedupe(schema: dict[str, Any]) -> dict[str, Any]:
    """Hoist repeated large subtrees into ``$defs``, largest first, until none repeats."""
    defs: dict[str, Any] = {}
    body = schema
    while True:
        seen: dict[str, list[str]] = {}
        _subtrees({"body": body, "defs": defs}, "", seen)
        repeated = [(text, paths) for text, paths in seen.items() if len(paths) > 1]
        if not repeated:
            break
        text, paths = max(repeated, key=lambda item: len(item[0]))
        name = _def_name(sorted(paths)[0], text)
        ref = {"$ref": f"#/$defs/{name}"}
        body = _replace(body, text, ref)
        defs = {key: _replace(value, text, ref) for key, value in defs.items()}
        defs[name] = json.loads(text)
    return {**body, "$defs": defs} if defs else body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crd", type=Path, required=True, help="ray.io_rayclusters.yaml of the KubeRay release")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    crd = yaml.safe_load(args.crd.read_text())
    schema = dedupe(v1_schema(crd))
    args.out.write_text(json.dumps(schema, sort_keys=True, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
