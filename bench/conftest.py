"""Collect ``bench_*.py`` here (pytest's default pattern is ``test_*.py``): ``pytest bench/``.

Files named on the command line are collected by pytest itself; this hook adds the others when a
directory is given, without collecting anything twice.
"""
import pytest


def pytest_collect_file(file_path, parent):
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
