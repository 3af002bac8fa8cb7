"""gunicorn.conf.py's defaults: how many workers, by the database the service is configured for."""
import os
import runpy

import pytest

from .servers import ROOT


def configured_workers():
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))["workers"]


@pytest.fixture
def no_settings(instance_path, monkeypatch):
    for name in ("WEB_CONCURRENCY", "DATABASE_URL", "POTPIE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_sqlite_gets_a_worker_per_core_and_one_more(no_settings):
    assert configured_workers() == os.cpu_count() + 1


@pytest.mark.parametrize("variable", ["DATABASE_URL", "POTPIE_DATABASE_URL"])
def test_postgresql_gets_a_worker_per_core_and_two_more(no_settings, monkeypatch, variable):
    monkeypatch.setenv(variable, "postgresql://potpie@db.internal:5432/potpie")
    assert configured_workers() == os.cpu_count() + 2


def test_postgresql_named_in_the_instance_config_counts_too(no_settings, instance_path):
    (instance_path / "config.py").write_text(
        'DATABASE_URL = "postgresql://potpie@db.internal:5432/potpie"\n')
    assert configured_workers() == os.cpu_count() + 2


def test_web_concurrency_wins(no_settings, monkeypatch):
    monkeypatch.setenv("POTPIE_DATABASE_URL", "postgresql://potpie@db.internal:5432/potpie")
    monkeypatch.setenv("WEB_CONCURRENCY", "7")
    assert configured_workers() == 7
