"""Every error the services raise derives from ``veritally.errors.VeritallyError``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import veritally
from veritally.errors import VeritallyError


def _error_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of the installed ``veritally`` package
    (generated code aside), by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(veritally.__path__, prefix="veritally."):
        if "._gen" in module_info.name or module_info.name.endswith("._gen"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_service_error_derives_from_veritally_error() -> None:
    classes = _error_classes()
    strays = sorted(name for name, cls in classes.items() if not issubclass(cls, VeritallyError))
    assert not strays, "derive these from veritally.errors.VeritallyError:\n" + "\n".join(strays)


def test_the_walk_sees_the_errors_of_every_service() -> None:
    # A walk that found nothing would pass the test above vacuously.
    names = set(_error_classes())
    assert {
        "veritally.errors.VeritallyError",
        "veritally.ingest.engine.CommitError",
        "veritally.ingest.store.CaptureIntegrityError",
        "veritally.aggregation.store.CursorMismatchError",
        "veritally.publication.errors.PublicationError",
        "veritally.pki.PkiError",
        "veritally.capture.CaptureError",
        "veritally.election.loader.DefinitionError",
    } <= names


def test_errors_keep_the_standard_base_they_behave_as() -> None:
    from veritally.aggregation.store import CursorMismatchError
    from veritally.election.loader import DefinitionError
    from veritally.stack import StackError
    from veritally.supervisor import CrlError, ProcessError

    assert issubclass(CursorMismatchError, ValueError)
    assert issubclass(DefinitionError, ValueError)
    assert issubclass(StackError, RuntimeError)
    assert issubclass(ProcessError, RuntimeError)
    assert issubclass(CrlError, RuntimeError)
