"""The seams between the packages: the model runtime, the vector index and the geometry import no Django."""

import subprocess
import sys

from tests.conftest import ROOT

IMPORT_ALL_WITHOUT_DJANGO = """
import pkgutil, importlib, sys
import similarity.runtime, similarity.index, similarity.geometry
for package in (similarity.runtime, similarity.index, similarity.geometry):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
print(sorted(name for name in sys.modules if name == "django" or name.startswith("django.")))
"""


def test_the_runtime_index_and_geometry_packages_import_no_django():
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL_WITHOUT_DJANGO], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_runtime_and_index_read_their_settings_from_the_app(settings, tmp_path):
    from similarity.index import config as index_config
    from similarity.runtime import config as runtime_config

    settings.SIMILARITY_INDEX_DIR = tmp_path / "elsewhere"
    settings.SIMILARITY_RUNTIME = "onnx"
    assert index_config.current().directory == tmp_path / "elsewhere"
    assert runtime_config.current().runtime == "onnx"


def test_no_module_grows_past_400_lines():
    """A module that needs more has two concepts in it: split it along them."""
    sources = [*ROOT.glob("similarity/**/*.py"), *ROOT.glob("geolocator/*.py")]
    long = {
        str(path.relative_to(ROOT)): lines
        for path in sources
        if "migrations" not in path.parts and (lines := len(path.read_text().splitlines())) >= 400
    }
    assert not long, f"modules of 400 lines or more: {long}"
