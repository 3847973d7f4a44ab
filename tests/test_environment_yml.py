"""environment.yml is generated from pyproject.toml and uv.lock (scripts/environment_yml.py) and must be fresh."""

import importlib.util
import shutil

from conftest import ROOT

spec = importlib.util.spec_from_file_location("environment_yml", ROOT / "scripts" / "environment_yml.py")
env = importlib.util.module_from_spec(spec)
spec.loader.exec_module(env)


def test_environment_yml_is_what_pyproject_and_the_lock_give():
    assert (ROOT / "environment.yml").read_text() == env.render(), \
        "environment.yml is stale: run python scripts/environment_yml.py"


def test_a_dependency_change_in_pyproject_makes_it_stale(tmp_path):
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    before = env.render(tmp_path)
    text = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text.replace('"nbval>=0.11",\n', "", 1))  # the planted drift
    after = env.render(tmp_path)
    assert "nbval==" in before and "nbval==" not in after
