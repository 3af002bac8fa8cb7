"""gunicorn.conf.py's defaults: how many workers, by the database the service is configured for."""
import os
import runpy
import subprocess
import sys

import pytest

from .servers import ROOT, free_port, stop_with_the_test_run


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


@pytest.mark.parametrize("name,value,bounds", [
    ("GUNICORN_TIMEOUT", "30s", "0 or more"),
    ("GUNICORN_TIMEOUT", "-1", "0 or more"),
    ("GUNICORN_GRACEFUL_TIMEOUT", "-1", "0 or more"),
    ("WEB_CONCURRENCY", "0", "1 or more"),
    ("WEB_CONCURRENCY", "abc", "1 or more"),
    ("WEB_CONCURRENCY", "9" * 5000, "1 or more"),
    ("PORT", "99999", "0 to 65535"),
    ("PORT", "８０", "0 to 65535"),
])
def test_a_number_gunicorn_cannot_use_is_one_error_line(no_settings, monkeypatch, name, value,
                                                        bounds):
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as refused:
        configured_workers()
    assert str(refused.value) == f"Error: {name} must be a whole number, {bounds}; got {value!r}"


def test_numbers_and_their_defaults(no_settings, monkeypatch):
    for name in ("PORT", "GUNICORN_TIMEOUT", "GUNICORN_GRACEFUL_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WEB_CONCURRENCY", "")
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert (settings["bind"], settings["timeout"], settings["graceful_timeout"]) == (
        "127.0.0.1:8000", 30, 30)
    assert settings["workers"] == os.cpu_count() + 1
    monkeypatch.setenv("PORT", " 8080 ")
    monkeypatch.setenv("GUNICORN_TIMEOUT", "0")  # gunicorn's "no limit"
    monkeypatch.setenv("GUNICORN_GRACEFUL_TIMEOUT", "0")
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert (settings["bind"], settings["timeout"], settings["graceful_timeout"]) == (
        "127.0.0.1:8080", 0, 0)


def test_no_control_socket_that_instances_on_one_host_would_share(no_settings):
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["control_socket_disable"] is True


@pytest.mark.slow
@pytest.mark.parametrize("name,value,error", [
    ("POTPIE_LOG_LEVEL", "LOUD",
     "POTPIE_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not 'LOUD'"),
    ("POTPIE_RATELIMIT_DEFAULT", "lots", "POTPIE_RATELIMIT_DEFAULT: couldn't parse rate limit "
                                         "string 'lots' in 'lots' (e.g. '600 per minute')"),
])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_setting_the_service_refuses_stops_gunicorn_with_its_error_line(
        instance_path, name, value, error, workers):
    env = dict(os.environ, PORT=str(free_port()), WEB_CONCURRENCY=str(workers), **{name: value})
    done = subprocess.run([sys.executable, "-m", "gunicorn", "wsgi:app", "-c", "gunicorn.conf.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                          preexec_fn=stop_with_the_test_run)
    assert f"\nError: {error}\n" in done.stderr
    # No traceback of the service's: gunicorn 27, halting for two failed workers at once,
    # raises its HaltServer again and exits with 1 and a traceback of its own.
    assert "potpie_flask" not in done.stderr and "wsgi.py" not in done.stderr
    if workers == 1:
        assert done.returncode == 4  # gunicorn's "App failed to load"
        assert "Traceback" not in done.stderr
    else:
        assert done.returncode in (1, 4)


def test_a_configuration_that_does_not_load_stops_gunicorn_with_the_childs_words(
        no_settings, instance_path, capfd):
    (instance_path / "config.py").write_text("DATABASE_URL = \n")
    with pytest.raises(SystemExit) as stopped:
        configured_workers()
    assert stopped.value.code == 1
    err = capfd.readouterr().err
    assert "SyntaxError" in err and "CalledProcessError" not in err
