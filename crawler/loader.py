"""Finding spiders: bundled ones by name, a module on the path, or a .py file."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
import sys
import traceback
from pathlib import Path
from types import ModuleType

from crawler.errors import UsageError
from crawler.spider import Spider


def bundled_spiders() -> dict[str, type[Spider]]:
    """The example spiders shipped in crawler.spiders, by name."""
    import crawler.spiders as package

    found: dict[str, type[Spider]] = {}
    for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
        found.update(spiders_in(importlib.import_module(info.name)))
    return found


def spiders_in(module: ModuleType) -> dict[str, type[Spider]]:
    """The Spider subclasses a module defines (not those it imports), by name."""
    return {
        obj.name or obj.__name__: obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Spider)
        and obj is not Spider
        and obj.__module__ == module.__name__
    }


def load_spider(target: str) -> Spider:
    """A spider instance from a name, `module[:Class]`, or a path to a .py file."""
    if target.endswith(".py") or Path(target).is_file():
        module = _import_file(Path(target))
        return _pick(spiders_in(module), target, None)
    bundled = bundled_spiders()
    if target in bundled:
        return bundled[target]()
    module_name, _, class_name = target.partition(":")
    module = _import_module(module_name, bundled)
    return _pick(spiders_in(module), target, class_name or None)


def _pick(found: dict[str, type[Spider]], target: str, class_name: str | None) -> Spider:
    if class_name is not None:
        for cls in found.values():
            if cls.__name__ == class_name:
                return cls()
        raise UsageError(f"{target}: no spider class {class_name!r} there")
    if not found:
        raise UsageError(f"{target}: defines no Spider subclass")
    if len(found) > 1:
        names = ", ".join(sorted(found))
        raise UsageError(f"{target}: defines several spiders ({names}); use MODULE:CLASS")
    return next(iter(found.values()))()


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    name = f"_crawler_spider_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: report where it broke, in one line
        raise UsageError(f"{path} does not import: {_where(exc, path)}") from None
    return module


def _import_module(name: str, bundled: dict[str, type[Spider]]) -> ModuleType:
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name.split(".")[0] and exc.name != name:
            raise UsageError(f"{name} does not import: {exc}") from None
        close = difflib.get_close_matches(name, list(bundled), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(bundled)) or "none"
        raise UsageError(f"unknown spider {name!r}{hint} (bundled: {known})") from None
    except Exception as exc:
        raise UsageError(f"{name} does not import: {_where(exc, None)}") from None


def _where(exc: BaseException, path: Path | None) -> str:
    if isinstance(exc, SyntaxError):
        return f"{exc.filename}, line {exc.lineno}: SyntaxError: {exc.msg}"
    frames = list(traceback.extract_tb(exc.__traceback__))
    if path is not None:
        mine = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
        frames = mine or frames
    place = f"{frames[-1].filename}, line {frames[-1].lineno}: " if frames else ""
    return f"{place}{type(exc).__name__}: {exc}"
