"""Typed frozen dataclass configs: JSON round trip, dotted overrides, typed coercion.

Every buildable class has a config declared as

    @dataclass(frozen=True, kw_only=True)
    class VQConfig(QuantizerConfig):
        codebook_size: int = 16384
        ...
        def __post_init__(self):  # raise ValueError that says how to fix the value

and is registered with `argen.registry.register("vq", VQConfig)`. Nested configs whose field is typed
with a base class (e.g. `quantizer: QuantizerConfig`) are polymorphic: their JSON carries `"kind"`.
"""
from __future__ import annotations

import dataclasses
import json
import types
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

from . import registry
from .errors import ConfigError

# Version 2: pipelines saved as component folders (tokenizer/, conditioner/, generator/), class conditioning
# moved out of the generators into a conditioner. Version 3: raster generators' `cond_mode`; 4: tokenizers'
# `channels`; 5: diffusion heads' `x0_clip`. `argen.saving` migrates older directories on load (`argen.migrations`).
CONFIG_VERSION = 5


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base of every config. `kind` is the registry name, set by `register`."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, require_all: bool = False) -> "Config":
        return from_dict(cls, data, require_all=require_all)

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    def override(self, assignments: list[str] | dict[str, Any]) -> "Config":
        return apply_overrides(self, assignments)


# ----------------------------------------------------------------------------- serialisation

def to_dict(cfg: Config) -> dict[str, Any]:
    """Config -> JSON-able dict. Nested configs carry their `kind`."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        out[f.name] = _plain(getattr(cfg, f.name))
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, Config):  # registered kinds carry their name (polymorphic fields); plain groups do not
        return {"kind": type(v).kind, **to_dict(v)} if type(v).kind else to_dict(v)
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


class MissingFieldsError(ConfigError):
    """Fields absent from a config read with `require_all=True`; `paths` are their dotted names."""

    def __init__(self, paths: list[str], owner: str):
        self.paths, self.owner = list(paths), owner
        super().__init__(f"missing field{'s' if len(paths) > 1 else ''} {', '.join(self.paths)} (of {owner}); "
                         "a saved config lists every field")

    def __reduce__(self):  # picklable (raised in a worker process) despite the two-argument constructor
        return type(self), (self.paths, self.owner)


def from_dict(cls: type[Config], data: dict[str, Any], path: str = "", *, require_all: bool = False) -> Config:
    """dict -> config of `cls` (or of the registered subclass named by data["kind"]).

    Lenient by default: an absent field takes its default, which is what CLI JSON and overrides want.
    `require_all=True` (how a saved model's config.json is read) refuses any absent field, nested ones too,
    with a `MissingFieldsError` naming each by its dotted path: a saved config lists every field
    (`to_dict`), so an absent one means a damaged file, and today's default need not be the value the model
    was trained with (a cosine VQ read as euclidean gives other token ids). Fields added in a later config
    version are supplied by its migration step (`argen.migrations`), never by the default."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__}: expected an object of fields, got {type(data).__name__}")
    data = dict(data)
    kind = data.pop("kind", None)
    if kind is not None and kind != cls.kind:
        cls = _config_class_for(kind, cls, path)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(_join(path, u) for u in unknown)} "
            f"for {cls.__name__}; allowed: {', '.join(sorted(fields))}"
        )
    missing = [_join(path, name) for name in fields if name not in data] if require_all else []
    kwargs = {}
    for name, value in data.items():
        try:
            kwargs[name] = coerce(value, hints[name], _join(path, name), require_all=require_all)
        except MissingFieldsError as e:  # gather every absent field of the file, not just the first group's
            missing += e.paths
    if missing:
        raise MissingFieldsError(missing, cls.__name__)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path or cls.__name__}: {e}") from None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _config_class_for(kind: str, base: type[Config], path: str) -> type[Config]:
    cfg_cls = registry.config_class(kind)
    if not issubclass(cfg_cls, base):
        allowed = registry.names(base)
        raise ConfigError(f"{path or 'config'}: kind '{kind}' is not a {base.__name__}; allowed kinds: {', '.join(allowed)}")
    return cfg_cls


# ----------------------------------------------------------------------------- coercion

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce(value: Any, tp: Any, path: str, *, require_all: bool = False) -> Any:
    """Coerce `value` (from JSON or a CLI string) to the annotated type `tp`, or raise ConfigError.
    `require_all` is passed to the `from_dict` of nested configs."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        absent = None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, path, require_all=require_all)
            except MissingFieldsError as e:  # the right member, incomplete: say so rather than "cannot read"
                absent = absent or e
            except ConfigError:
                pass  # try the next member of the union
        if absent is not None:
            raise absent
        raise ConfigError(f"{path}: cannot read {value!r} as {_type_name(tp)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed:
            return value
        raise ConfigError(f"{path}: {value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = _parse_str_sequence(value, path)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list for {_type_name(tp)}, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} values for {_type_name(tp)}, got {len(value)}")
            items = [coerce(v, a, f"{path}[{i}]", require_all=require_all) for i, (v, a) in enumerate(zip(value, args))]
        else:
            a = args[0] if args else Any
            items = [coerce(v, a, f"{path}[{i}]", require_all=require_all) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if isinstance(value, str):
            value = _json_or_raise(value, path)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected an object, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {coerce(k, kt, path): coerce(v, vt, f"{path}.{k}", require_all=require_all) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if isinstance(value, str):
            value = _json_or_raise(value, path)
        return from_dict(tp, value, path, require_all=require_all)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{path}: cannot read {value!r} as {_type_name(tp)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _json_or_raise(s: str, path: str) -> Any:
    try:
        return json.loads(s)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: cannot parse {s!r} as JSON ({e.msg})") from None


def _parse_str_sequence(s: str, path: str) -> list:
    s = s.strip()
    if s.startswith("["):
        return _json_or_raise(s, path)
    if s == "":
        return []
    return [x.strip() for x in s.split(",")]


# ----------------------------------------------------------------------------- overrides

def parse_assignment(text: str) -> tuple[str, Any]:
    """'generator.depth=20' -> ('generator.depth', 20). Values are read as JSON when they parse."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. generator.depth=20")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def apply_overrides(cfg: Config, assignments: list[str] | dict[str, Any]) -> Config:
    """Return a new config with dotted-key overrides applied and every value re-validated.

    `assignments` is a list of 'a.b=value' strings (CLI `--set`) or a {'a.b': value} dict.
    Setting `x.kind=name` swaps a nested polymorphic config for that kind's defaults.
    """
    items = [parse_assignment(a) for a in assignments] if isinstance(assignments, list) else list(assignments.items())
    data = {"kind": type(cfg).kind, **to_dict(cfg)} if type(cfg).kind else to_dict(cfg)
    for key, value in items:
        _set_path(data, type(cfg), key.split("."), value, key)
    return from_dict(type(cfg), data)


def _set_path(data: dict, cls: type[Config], parts: list[str], value: Any, full: str) -> None:
    name = parts[0]
    base = cls  # the declared type; a kind swap may pick any registered subclass of it
    if "kind" in data and data["kind"] and data["kind"] != cls.kind:
        cls = _config_class_for(data["kind"], cls, full)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if name == "kind" and len(parts) == 1:
        new_cls = _config_class_for(value, base, full)
        data.clear()
        data.update({"kind": value, **to_dict(new_cls())})
        return
    if name not in fields:
        prefix = full[: len(full) - len(".".join(parts))]
        raise ConfigError(f"unknown key '{full}'; allowed under '{prefix.rstrip('.') or 'top level'}': {', '.join(sorted(fields))}")
    if len(parts) == 1:
        data[name] = value
        return
    sub_tp = get_type_hints(cls)[name]
    sub_cls = next((a for a in (get_args(sub_tp) or (sub_tp,)) if isinstance(a, type) and issubclass(a, Config)), None)
    if sub_cls is None or not isinstance(data.get(name), dict):
        raise ConfigError(f"'{full}': '{name}' is a plain value, not a group; set it as {name}=...")
    _set_path(data[name], sub_cls, parts[1:], value, full)


def to_json(cfg: Config) -> str:
    return json.dumps({"kind": type(cfg).kind, **to_dict(cfg)}, indent=2, sort_keys=False)


__all__ = ["Config", "CONFIG_VERSION", "MissingFieldsError", "to_dict", "from_dict", "coerce", "apply_overrides",
           "parse_assignment", "to_json"]
