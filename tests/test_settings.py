"""Settings: typed environment variables, start-up checks, and documentation that lists every variable."""

import os
import re
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from geolocator import env
from tests.conftest import ROOT

READERS = re.compile(r'(?:env_\w+|raw|environ\.get|environ)\(?\s*[\[(]?"([A-Z][A-Z0-9_]+)"')
NOT_CONFIGURATION = {"DJANGO_SETTINGS_MODULE"}


def manage(*args: str, **variables: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "DJANGO_SECRET_KEY": "test",
        "DJANGO_SETTINGS_MODULE": "geolocator.settings",
        **variables,
    }
    environment.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "reader, value, words",
    [
        (lambda: env.env_int("X", 1, minimum=1), "0", "X='0': expected a whole number >= 1"),
        (lambda: env.env_int("X", 1), "12.5", "X='12.5': expected a whole number"),
        (lambda: env.env_float("X", 0.5, minimum=-1, maximum=1), "1.5", "X='1.5': expected a number >= -1 and <= 1"),
        (lambda: env.env_float("X", 0.5), "nan", "X='nan': expected a number"),
        (lambda: env.env_bool("X", True), "maybe", "X='maybe': expected 1/0"),
        (lambda: env.env_choice("X", "all", ("all", "off")), "some", "X='some': expected one of all, off"),
        (lambda: env.env_rate("X", "1/minute"), "120/fortnight", "X='120/fortnight': expected a rate"),
    ],
)
def test_a_value_that_does_not_parse_is_refused_naming_the_variable(monkeypatch, reader, value, words):
    monkeypatch.setenv("X", value)
    with pytest.raises(ImproperlyConfigured, match=re.escape(words)):
        reader()


def test_unset_or_empty_variables_take_the_default(monkeypatch):
    monkeypatch.setenv("X", "  ")
    assert env.env_int("X", 7) == 7 and env.env_choice("X", "all", ("all",)) == "all"
    monkeypatch.delenv("X")
    assert env.env_optional_float("X") is None and env.env_bool("X", True) is True


def test_values_parse_to_their_types(monkeypatch):
    monkeypatch.setenv("X", "Off")
    assert env.env_bool("X", True) is False and env.env_choice("X", "all", ("all", "off")) == "off"
    monkeypatch.setenv("X", "30/hour")
    assert env.env_rate("X", "1/minute") == "30/hour"


def test_manage_py_refuses_a_bad_value_in_one_line():
    done = manage("check", SIMILARITY_VERIFY="maybe")

    assert done.returncode != 0
    assert done.stderr.strip() == "Configuration error: SIMILARITY_VERIFY='maybe': expected one of all, first, off."


def test_the_embedded_sqlite_database_is_kept_in_wal_mode(tmp_path):
    """Readers and the writer (web server, worker) do not block each other; the mode stays with the file."""
    import sqlite3

    done = manage("migrate", "--noinput", GEOLOCATOR_DATA_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    with sqlite3.connect(tmp_path / "geolocator.sqlite3") as database:
        assert database.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_mistyped_encoder_fails_the_system_checks(settings):
    settings.SIMILARITY_ENCODER = "efficientnet_lite0@999"
    with pytest.raises(SystemCheckError, match="similarity.E001"):
        call_command("check")


def test_contradicting_limits_fail_the_system_checks(settings):
    settings.SIMILARITY_MAX_LOOKUP_PIXELS = settings.SIMILARITY_MAX_IMAGE_PIXELS + 1
    with pytest.raises(SystemCheckError, match="similarity.E002"):
        call_command("check")


def test_the_wsgi_application_does_not_start_on_settings_the_checks_reject(settings):
    from geolocator.wsgi import _refuse_bad_settings

    _refuse_bad_settings()  # the test settings pass
    settings.SIMILARITY_ENCODER = "nonsense"
    with pytest.raises(ImproperlyConfigured, match="similarity.E001"):
        _refuse_bad_settings()


def test_the_configuration_page_lists_every_variable_the_code_reads():
    read = set()
    for path in [*ROOT.glob("geolocator/*.py"), *ROOT.glob("similarity/**/*.py")]:
        read |= set(READERS.findall(path.read_text()))
    read -= NOT_CONFIGURATION
    assert {"SIMILARITY_VERIFY", "GUNICORN_WORKERS", "DATABASE_URL", "HF_HUB_OFFLINE"} <= read  # the pattern finds them
    page = (ROOT / "docs" / "configuration.md").read_text()
    table = page.split("| Variable | Default | Meaning |", 1)[1].split("\n\n", 1)[0]
    missing = sorted(name for name in read if f"`{name}`" not in table)
    assert not missing, f"not in the configuration table of docs/configuration.md: {missing}"


def layout_bullets() -> dict[str, str]:
    """The layout in docs/development.md: each bullet's folder (nested bullets under their parent's) -> its text."""
    layout = (ROOT / "docs" / "development.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    bullets: dict[str, str] = {}
    parents: list[tuple[int, str]] = []
    current = None
    for line in layout.splitlines():
        bullet = re.match(r"^( *)\* `([\w.-]+)/`", line)
        if bullet:
            depth = len(bullet.group(1))
            parents = [(d, folder) for d, folder in parents if d < depth]
            current = "/".join([folder for _, folder in parents] + [bullet.group(2)])
            parents.append((depth, bullet.group(2)))
            bullets[current] = line
        elif current and line.startswith(" "):
            bullets[current] += " " + line.strip()
    return bullets


def test_the_documented_layout_names_every_module_under_its_package():
    bullets = layout_bullets()
    assert {"similarity", "similarity/runtime", "similarity/index", "geolocator"} <= set(bullets)
    sources = [*ROOT.glob("similarity/**/*.py"), *ROOT.glob("geolocator/*.py")]
    missing = []
    for path in sources:
        relative = path.relative_to(ROOT)
        if path.name == "__init__.py" or {"migrations", "management"} & set(relative.parts):
            continue
        folder = max((f for f in bullets if str(relative.parent).startswith(f)), key=len)
        text = bullets[folder]
        subfolders = relative.parent.relative_to(folder).parts
        if f"`{path.name}`" not in text or any(f"`{sub}/`" not in text for sub in subfolders):
            missing.append(str(relative))
    assert not missing, f"not in docs/development.md's layout where the tree has them: {missing}"


def test_the_documented_layout_names_no_module_the_tree_does_not_have():
    stale = [
        f"{folder}/{name}"
        for folder, text in layout_bullets().items()
        for name in re.findall(r"`([\w.]+\.py)`", text)
        if not any((ROOT / folder).rglob(name))
    ]
    assert not stale, f"docs/development.md's layout names modules that do not exist: {stale}"


def test_a_log_line_appears_once_even_after_a_library_configures_the_root_logger(tmp_path):
    # open_clip logs through logging.warning(), which gives the root logger a handler of its own
    script = (
        "import logging, django; django.setup(); logging.warning('a library speaks'); "
        "logging.getLogger('similarity.tasks').info('the service speaks')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "geolocator.settings",
            "DJANGO_DEBUG": "1",
            "GEOLOCATOR_DATA_DIR": str(tmp_path),
            "SIMILARITY_LOG_LEVEL": "info",
        },
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("the service speaks") == 1, done.stderr
