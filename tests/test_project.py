"""The project's own files: environment.yml in step with pyproject.toml, shipped data with its sources."""

import re
import tomllib

import yaml

from conftest import ROOT


def _names(reqs):
    return {re.split(r"[<>=!~\[ ]", r.strip(), maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra, reqs in project["optional-dependencies"].items():
        if extra != "all":
            wanted |= set(reqs)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"] if isinstance(d, str))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pip_reqs = [p for p in pip if not p.startswith("-e")]
    assert _names(pip_reqs) == _names(wanted)
    assert set(pip_reqs) == wanted, "version bounds differ between environment.yml and pyproject.toml"
    assert "-e .[all]" in pip


def test_makefile_pins_the_local_torch_and_ci_calls_make_test():
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


def test_shipped_data_has_sources():
    readme = (ROOT / "README.md").read_text()
    for f in (ROOT / "virnucpro_kernel" / "data" / "examples").glob("*.fa"):
        stem = f.name.split("_")[0]
        assert stem in readme, f"{f.name} has no source in README.md"
