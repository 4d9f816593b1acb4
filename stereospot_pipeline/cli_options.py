"""Command-line options made from pydantic models: one option per field, with the field's
description as help, enums and literals as choices, so a new setting appears on the CLI without
a line of CLI code. Every option defaults to None ("not given"), so a settings file's values
stay unless an option overrides them."""

from __future__ import annotations

import inspect
import types
import typing
from enum import Enum

import typer
from pydantic import BaseModel


def _choices(annotation) -> tuple[type | None, list[str] | None, bool]:
    """(python type for typer, choice strings, allows 'auto') of a field annotation."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        literals = [v for a in members if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
        others = [a for a in members if typing.get_origin(a) is not typing.Literal]
        if not literals and len(others) == 1:
            return _choices(others[0])
        return str, None, "auto" in literals  # e.g. a number or 'auto': checked by the model
    if typing.get_origin(annotation) is typing.Annotated:
        return _choices(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return str, [str(v) for v in args], False
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return annotation, None, False
    if annotation in (bool, int, float, str):
        return annotation, None, False
    return str, None, False


def model_options(model: type[BaseModel], panel: str, as_text: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """Keyword parameters for a typer command, one per field of ``model`` (``--field-name``).
    Fields in ``as_text`` are taken as text (for the caller to parse, e.g. h:mm:ss times)."""
    params = []
    for name, field in model.model_fields.items():
        kind, choices, auto = _choices(field.annotation)
        if name in as_text:
            kind, choices = str, None
        default = field.default.value if isinstance(field.default, Enum) else field.default
        help_text = (field.description or name.replace("_", " ")) + f" (default: {default})"
        flag = f"--{name.replace('_', '-')}"
        extra: dict = {}
        if kind is bool:
            decls = [f"{flag}/--no-{flag[2:]}"]
        else:
            decls = [flag]
            if choices:
                # typer shows an enum's values as the choices (it takes no click type here).
                kind = Enum(f"{name}_choices", {c: c for c in choices}, type=str)
            elif auto:
                extra["metavar"] = "NUMBER|auto"
        option = typer.Option(None, *decls, help=help_text, rich_help_panel=panel, show_default=False, **extra)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=typing.Optional[kind]))
    return params


def given(values: dict, model: type[BaseModel]) -> dict:
    """The options of ``model``'s fields that were given on the command line (enums as values)."""
    return {name: (v.value if isinstance(v, Enum) else v) for name in model.model_fields
            if (v := values.get(name)) is not None}


def with_options(*groups: list[inspect.Parameter]):
    """Give a ``def command(..., **options)`` function these parameters too (typer reads the
    signature)."""
    def wrap(fn):
        signature = inspect.signature(fn)
        fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        fn.__signature__ = signature.replace(parameters=[*fixed, *(p for group in groups for p in group)])
        return fn
    return wrap
