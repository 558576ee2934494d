"""The Serve config a multi-node Ray cluster runs (../serve-cluster.yaml, and the
`serveConfigV2` of k8s/rayservice.yaml): read, validated by Ray's own schema, and checked
for keys that schema would drop without a word.

NOTE: Ray's config schemas accept unknown keys on purpose (forward compatibility, their
docstrings say): a misspelt `upscale_delay` or `max_replica` deploys, with Ray's default
in its place. `unknown_keys` walks the document against the same pydantic models and
names every key no field takes.
"""

from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import ServeDeploySchema


class ServeConfigError(ValueError):
    """A Serve config Ray would refuse, or would deploy without some of its keys; the
    message is one line."""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds, directly or inside Optional/Union/List."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if (model := _model_in(arg)) is not None:
            return model
    return None


def unknown_keys(model: type[BaseModel], data: Any, path: str = "") -> list[str]:
    """Paths of the keys in `data` that no field of `model` (by name or alias) takes,
    through nested models and lists of them. Free-form fields (`runtime_env`, `args`)
    are not walked."""
    if not isinstance(data, dict):
        return []
    fields = {}
    for name, field in model.model_fields.items():
        fields[name] = field
        if field.alias:
            fields[field.alias] = field
    found = []
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        taken = fields.get(key)
        if taken is None:
            found.append(where)
            continue
        nested = _model_in(taken.annotation)
        if nested is None:
            continue
        if isinstance(value, list):
            for index, item in enumerate(value):
                found += unknown_keys(nested, item, f"{where}[{index}]")
        else:
            found += unknown_keys(nested, value, where)
    return found


def _validate(model: type[BaseModel], data: Any, path: str = "") -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join([*([path] if path else []), *map(str, error["loc"])])
        raise ServeConfigError(f"{where or 'the config'}: {error['msg']}") from None


def check_serve_config(document: Any) -> ServeDeploySchema:
    """Ray's reading of a Serve config, or one line naming what is wrong."""
    if not isinstance(document, dict):
        raise ServeConfigError("a Serve config is a mapping (proxy_location, applications, ...)")
    schema: ServeDeploySchema = _validate(ServeDeploySchema, document)
    if unknown := unknown_keys(ServeDeploySchema, document):
        raise ServeConfigError(f"keys Ray would ignore: {', '.join(unknown)}")
    # NOTE: the schema takes an autoscaling_config mapping as a plain dict; Ray checks its
    # values only when it deploys.
    for a, application in enumerate(schema.applications):
        for d, deployment in enumerate(application.deployments):
            if isinstance(deployment.autoscaling_config, dict):
                path = f"applications.{a}.deployments.{d}.autoscaling_config"
                _validate(AutoscalingConfig, deployment.autoscaling_config, path)
    return schema


def read_serve_config(path: Path) -> ServeDeploySchema:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ServeConfigError(f"{path}: {exc}".splitlines()[0]) from None
    try:
        return check_serve_config(document)
    except ServeConfigError as exc:
        raise ServeConfigError(f"{path}: {exc}") from None
