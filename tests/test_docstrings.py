"""Every docstring example in crosscam's packages runs and shows what it says (examples marked
``+SKIP`` need files, models or runs that a test machine does not have)."""

import doctest
import importlib
import pkgutil

import pytest

import pipeline
import reid
import samples


def _module_names() -> list[str]:
    names = []
    for package in (pipeline, reid, samples):
        names.append(package.__name__)
        names.extend(info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."))
    return sorted(names)


@pytest.mark.parametrize("name", _module_names())
def test_docstring_examples_run(name: str):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, report=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed (see stdout)"
