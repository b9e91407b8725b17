"""Fails unless a client generated from an OpenAPI document has every
operation and every model of it.

    python check_client.py SPEC.json CLIENT_PACKAGE_DIR

openapi-python-client skips what it cannot read (with a warning that the
test step also fails on): an operation becomes a module
`api/<tag>/<operation_id in snake_case>.py` with `sync_detailed`, a component
schema a class of the same name in `models`.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path


def snake_case(name: str) -> str:
    """`createTasksBatch` -> `create_tasks_batch`."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    package_dir = Path(argv[2])
    sys.path.insert(0, str(package_dir.parent))
    package = package_dir.name

    problems: list[str] = []
    operation_ids = [
        operation["operationId"]
        for item in spec["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    ]
    operations = 0
    for operation_id in operation_ids:
        modules = sorted(package_dir.glob(f"api/*/{snake_case(operation_id)}.py"))
        if len(modules) != 1:
            problems.append(f"operation {operation_id}: {len(modules)} modules")
            continue
        tag = modules[0].parent.name
        module = importlib.import_module(f"{package}.api.{tag}.{modules[0].stem}")
        if not callable(getattr(module, "sync_detailed", None)):
            problems.append(f"operation {operation_id}: no sync_detailed in {modules[0]}")
            continue
        operations += 1

    models = importlib.import_module(f"{package}.models")
    schema_names = sorted(spec.get("components", {}).get("schemas", {}))
    missing_models = [name for name in schema_names if not hasattr(models, name)]
    problems.extend(f"model {name}: missing" for name in missing_models)

    if not operation_ids or not schema_names:
        problems.append("the document has no operations or no schemas")
    for problem in problems:
        print(f"check_client: {problem}", file=sys.stderr)
    print(
        f"check_client: {operations} of {len(operation_ids)} operations, "
        f"{len(schema_names) - len(missing_models)} of {len(schema_names)} models"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
