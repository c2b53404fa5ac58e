"""Every setting as an environment variable: the documented ``deploy/example.env`` and the names that exist.

The settings tree (:class:`ordersync.settings.Settings`) is the one source: :func:`env_settings` walks it
and yields one :class:`EnvSetting` per leaf field (``ORDERSYNC_KAFKA__BOOTSTRAP``), with its default as it
would be written in an env file and its description. ``ordersync settings env`` prints the example file
(a unit test keeps ``deploy/example.env`` identical to it), and ``ordersync settings check`` reports
``ORDERSYNC_*`` variables that are no setting, with the closest real name: a misspelt top-level one
(``ORDERSYNC_CHANNEL_FILE``) is ignored without a word and leaves the default in force; a misspelt one
inside a group (``ORDERSYNC_KAFKA__BOOTSTRAPS``) stops every command with "Extra inputs are not permitted".
"""

from __future__ import annotations

import difflib
import json
import re
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from ordersync.settings import Settings

ENV_PREFIX = "ORDERSYNC_"
NESTED_DELIMITER = "__"
REGENERATE_COMMAND = "ordersync settings env > deploy/example.env"
COMMENT_WIDTH = 98
#: Characters that make a value need quoting in an env file (shell and Docker Compose alike).
_NEEDS_QUOTES = re.compile(r"""[\s"'{}\[\]$#`\\;&|<>()*?!]""")


@dataclass(frozen=True)
class EnvSetting:
    """One leaf of the settings tree as an environment variable."""

    name: str
    default: str
    description: str
    secret: bool
    #: The nested settings group (``kafka``...), or "" for a top-level field.
    group: str
    #: A mapping field: ``NAME__KEY`` variables set one entry of it.
    mapping: bool


def _unwrap_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if get_origin(annotation) in (Union, UnionType):
        members = [arg for arg in get_args(annotation) if arg is not NoneType]
        if len(members) == 1:
            return members[0]
    if get_origin(annotation) is Annotated:
        return _unwrap_optional(get_args(annotation)[0])
    return annotation


def _settings_group(annotation: Any) -> type[BaseModel] | None:
    """The nested model of a field whose leaves are separate variables, if it is one."""
    inner = _unwrap_optional(annotation)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner
    return None


def _is_secret(annotation: Any) -> bool:
    inner = _unwrap_optional(annotation)
    return isinstance(inner, type) and issubclass(inner, SecretStr)


def _is_mapping(annotation: Any) -> bool:
    inner = _unwrap_optional(annotation)
    return get_origin(inner) is dict or inner is dict


def _choices(annotation: Any) -> tuple[str, ...]:
    inner = _unwrap_optional(annotation)
    if get_origin(inner) is Literal:
        return tuple(str(choice) for choice in get_args(inner))
    return ()


def _quote(text: str) -> str:
    # Single quotes are literal in both a shell and Compose's env files; a value holding one is spelt
    # the shell's way ('...'"'"'...').
    if not text or not _NEEDS_QUOTES.search(text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"


def render_value(value: Any) -> str:
    """A default as it is written in an env file: JSON for structures, plain text otherwise."""
    if value is None or isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int | str):
        return _quote(str(value))
    if isinstance(value, Path):
        return _quote(str(value))
    return _quote(json.dumps(to_jsonable_python(value), separators=(",", ":")))


def _description(field: FieldInfo) -> str:
    text = " ".join((field.description or "").split())
    choices = _choices(field.annotation)
    if choices:
        text = f"{text} One of: {', '.join(choices)}.".strip()
    return text


def env_settings(model: type[BaseModel] = Settings) -> list[EnvSetting]:
    """Every leaf setting of ``model`` (by default the whole tree), in declaration order."""
    return list(_walk(model, ENV_PREFIX, ""))


def _walk(model: type[BaseModel], prefix: str, group: str) -> Iterator[EnvSetting]:
    for field_name, field in model.model_fields.items():
        name = f"{prefix}{field_name.upper()}"
        nested = _settings_group(field.annotation)
        if nested is not None:
            yield from _walk(nested, name + NESTED_DELIMITER, group or field_name)
            continue
        secret = _is_secret(field.annotation)
        default = field.get_default(call_default_factory=True)
        yield EnvSetting(
            name=name,
            default="" if secret else render_value(default),
            description=_description(field),
            secret=secret,
            group=group,
            mapping=_is_mapping(field.annotation),
        )


def is_setting_env_name(name: str, settings: list[EnvSetting] | None = None) -> bool:
    """Does the variable set a setting? ``ORDERSYNC_KAFKA__BOOTSTRAP`` yes; a mapping's entry
    (``ORDERSYNC_RATELIMIT__LANE_RESERVES__PACKING``) yes; ``ORDERSYNC_KAFKA__BOOTSTRAPS`` no."""
    known = env_settings() if settings is None else settings
    upper = name.upper()
    for setting in known:
        if upper == setting.name:
            return True
        if setting.mapping and upper.startswith(setting.name + NESTED_DELIMITER):
            return True
    return False


def unknown_env_names(names: list[str]) -> dict[str, str | None]:
    """The ``ORDERSYNC_*`` names that set nothing, each with the closest real name (or None)."""
    known = env_settings()
    real = [setting.name for setting in known]
    unknown: dict[str, str | None] = {}
    for name in names:
        # ORDERSYNC_STATE_DIR is `ordersync dev up`'s state folder, read directly, not a setting;
        # ORDERSYNC_DEBUG asks the CLI for tracebacks (ordersync.cli.main).
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in (
            "ORDERSYNC_STATE_DIR",
            "ORDERSYNC_DEBUG",
        ):
            continue
        if not is_setting_env_name(name, known):
            close = difflib.get_close_matches(name.upper(), real, n=1, cutoff=0.75)
            unknown[name] = close[0] if close else None
    return unknown


def _group_doc(group: str) -> str:
    """The first paragraph of a settings group's own docstring ("" when it has none)."""
    field = Settings.model_fields.get(group)
    nested = _settings_group(field.annotation) if field else None
    # pydantic gives an undocumented model BaseModel's docstring; only a model's own one says something.
    if nested is None or not nested.__doc__ or nested.__doc__ == BaseModel.__doc__:
        return ""
    return " ".join(nested.__doc__.strip().split("\n\n")[0].split()).replace("``", "")


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text, width=COMMENT_WIDTH)]


def render_env_file(model: type[BaseModel] = Settings) -> str:
    """The documented example env file: every setting, commented out, with its default."""
    lines = [
        "# ordersync: every setting as an environment variable, with its default and what it does.",
        f"# Generated from ordersync/settings.py by `{REGENERATE_COMMAND}`; do not edit by hand.",
        "#",
        "# Every line is commented out: the default applies. To change a setting, copy this file",
        "# (Docker Compose reads ./ordersync.env; Kubernetes: the ConfigMap and Secret in deploy/k8s/),",
        "# uncomment the line and set the value. Secrets are shown empty: give them through a secret",
        "# store, never in a committed file. Structured values are JSON in single quotes.",
        "# Channel credentials are not settings: the channels file names the variables or files",
        "# that hold them (see docs/deploy.md).",
    ]
    current_group: str | None = None
    for setting in env_settings(model):
        if setting.group != current_group:
            current_group = setting.group
            lines += ["", f"# --- {setting.group or 'general'} ---", *_comment(_group_doc(setting.group))]
        lines.append("")
        description = f"{setting.description} (secret)".strip() if setting.secret else setting.description
        lines += _comment(description)
        lines.append(f"# {setting.name}={setting.default}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# CLI: mounted as `ordersync settings`


def report_env_problems(environ: Mapping[str, str]) -> list[str]:
    """One sentence per problem (never a value): names of ``environ`` that are no setting, and what the
    settings refuse in this process's environment."""
    problems = []
    unknown = unknown_env_names(list(environ))
    for name, closest in sorted(unknown.items()):
        hint = f" (did you mean {closest}?)" if closest else ""
        problems.append(f"{name} is not a setting{hint}")
    try:
        Settings()
    except ValidationError as exc:
        reported = {name.upper() for name in unknown}
        for error in exc.errors():
            name = ENV_PREFIX + NESTED_DELIMITER.join(str(part).upper() for part in error["loc"])
            if name not in reported:  # an unknown name inside a group: said above, with a hint
                problems.append(f"{name}: {error['msg']}")
    return problems
