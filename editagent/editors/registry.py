"""The one registry of weight editors, as peft's ``register_peft_method``: a method name, its config type and its
editor. Everything that lists editors reads it: ``editor_config`` (names on a command line or in a policy),
``make_editor``, the lazy exports of ``editagent.editors`` and the benchmarks' method lists.

    register_editor(MyConfig, MyEditor)             # MyConfig.method = "mine"; MyEditor.config_type = MyConfig
    make_editor(model, tokenizer, editor_config("mine", steps=10))

A built-in editor registers itself beside its config (``editagent.editors.config``) with the editor named as
"module:Class", loaded when first used, so building configs never imports torch. Importing this module does not
either.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from editagent.schema import EditError

if TYPE_CHECKING:
    from torch import nn

    from editagent.editors.config import EditorConfig
    from editagent.editors.editor import Editor

DEFAULT_METHOD = "rome"  # what ``make_editor`` builds without a config


@dataclass(frozen=True)
class Registration:
    """One editor: its method name, config type and editor class (or "module:Class", imported when first needed)."""

    method: str
    config_type: type[EditorConfig]
    editor: type[Editor] | str

    @property
    def editor_name(self) -> str:
        return self.editor.rpartition(":")[2] if isinstance(self.editor, str) else self.editor.__name__

    def editor_type(self) -> type[Editor]:
        if not isinstance(self.editor, str):
            return self.editor
        module, _, name = self.editor.partition(":")
        found = getattr(importlib.import_module(module), name)
        _check_pair(self.config_type, found)
        return found


_REGISTRY: dict[str, Registration] = {}


def _builtins() -> None:
    # The built-ins register when their configs are defined; a partly imported module (during that) is fine.
    importlib.import_module("editagent.editors.config")


def _check_pair(config_type: type[EditorConfig], editor_type: type[Any]) -> None:
    own = getattr(editor_type, "config_type", None)
    if own is not config_type:
        raise EditError(f"editor_type: {editor_type.__name__}.config_type is {getattr(own, '__name__', own)}, not "
                        f"{config_type.__name__}; an editor takes the config it is registered with")


def register_editor(config_type: type[EditorConfig], editor_type: type[Editor] | str) -> Registration:
    """Make ``editor_type`` (an ``Editor`` subclass, or "module:Class") the editor of ``config_type``, by the name
    ``config_type.method``. A name already registered is refused: pick another name."""
    _builtins()  # so that a built-in's name is taken before anyone else registers
    method = getattr(config_type, "method", "")
    if not isinstance(method, str) or not method.strip():
        raise EditError(f"config_type: {config_type.__name__} has no method name; give it "
                        "method: ClassVar[str] = 'my-editor'")
    known = _REGISTRY.get(method)
    if known is not None:
        raise EditError(f"method: {method!r} is already registered (config {known.config_type.__name__}, editor "
                        f"{known.editor_name}); give {config_type.__name__} another method name")
    if not isinstance(editor_type, str):
        _check_pair(config_type, editor_type)
    elif editor_type.count(":") != 1:
        raise EditError(f"editor_type: {editor_type!r}; name a class as 'package.module:Class'")
    _REGISTRY[method] = entry = Registration(method, config_type, editor_type)
    return entry


def registrations() -> list[Registration]:
    """Every registered editor, in registration order (the built-ins first)."""
    _builtins()
    return list(_REGISTRY.values())


def editor_methods(*, long_targets: bool | None = None) -> tuple[str, ...]:
    """The registered method names; ``long_targets`` True or False keeps only the editors whose config says they are
    (or are not) made for long targets (``EditorConfig.long_targets``)."""
    return tuple(entry.method for entry in registrations()
                 if long_targets is None or entry.config_type.long_targets == long_targets)


def config_type_of(method: str) -> type[EditorConfig] | None:
    """The config type registered as ``method``, or None."""
    _builtins()
    entry = _REGISTRY.get(method)
    return entry.config_type if entry is not None else None


def editor_type_of(config: EditorConfig | type[EditorConfig]) -> type[Editor]:
    """The editor of ``config`` (a config or its type); a subclass of a registered config gets its parent's."""
    kind = config if isinstance(config, type) else type(config)
    by_type = {entry.config_type: entry for entry in registrations()}
    for parent in kind.__mro__:
        if parent in by_type:
            return by_type[parent].editor_type()
    raise EditError(f"config: no editor is registered for {kind.__name__}; register one with "
                    "editagent.editors.register_editor")


def exported(name: str) -> type[Any] | None:
    """The config or editor class registered under the class name ``name`` (the lazy exports of the package)."""
    for entry in registrations():
        if entry.config_type.__name__ == name:
            return entry.config_type
        if entry.editor_name == name:
            return entry.editor_type()
    return None


def exported_names() -> list[str]:
    return [name for entry in registrations() for name in (entry.config_type.__name__, entry.editor_name)]


def make_editor(model: nn.Module, tokenizer: Any, config: EditorConfig | None = None, **options: Any) -> Editor:
    """The editor for ``config`` (None: ROME with its defaults) on ``model``; ``options`` go to its constructor
    (``stats_texts``, ``cache_dir``, ``progress``)."""
    config = config if config is not None else CONFIGS[DEFAULT_METHOD]()
    return editor_type_of(config)(model, tokenizer, config, **options)


class _RegistryView(Mapping[Any, Any]):
    """A read-only view of the registry (for code that used the old tables); it follows later registrations."""

    def __init__(self, by_type: bool) -> None:
        self._by_type = by_type

    def _entries(self) -> dict[Any, Registration]:
        return {(entry.config_type if self._by_type else entry.method): entry for entry in registrations()}

    def __getitem__(self, key: Any) -> Any:
        entry = self._entries()[key]
        return entry.editor_type() if self._by_type else entry.config_type

    def __iter__(self) -> Iterator[Any]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)!r})"


# method name -> config type
CONFIGS: Mapping[str, type[EditorConfig]] = _RegistryView(by_type=False)
# config type -> editor (reading an entry imports that editor, and torch)
EDITORS: Mapping[type[EditorConfig], type[Editor]] = _RegistryView(by_type=True)
