"""Plugin loading with fake installed distributions: real entry points, no pip."""

import importlib.metadata as md
import json
import subprocess
import sys
import warnings

import pytest

import kdcore
from kdcore.errors import ComponentError, PluginError
from kdcore.plugins import PluginLoadWarning, load_plugins
from kdcore.testing import write_fake_plugin

GOOD = """
import kdcore
from kdcore.builtins import L1Loss

class Fancy(L1Loss):
    '''A fancy L1.'''

@kdcore.hookimpl
def kdcore_register_losses(register):
    register("fancy", Fancy, aliases=("fancy-l1",))
"""

SAME_NAME = """
import kdcore
from kdcore.builtins import MSELoss

class Other(MSELoss):
    '''Another fancy loss.'''

@kdcore.hookimpl
def kdcore_register_losses(register):
    register("fancy", Other)
"""

RAISES_ON_IMPORT = "raise RuntimeError('boom at import')\n"

HOOK_RAISES = """
import kdcore
@kdcore.hookimpl
def kdcore_register_losses(register):
    raise ValueError('hook exploded')
"""

BAD_NAME = """
import kdcore
from kdcore.builtins import L1Loss
@kdcore.hookimpl
def kdcore_register_losses(register):
    register("Bad_Name", L1Loss)
"""

NOT_A_SUBCLASS = """
import kdcore
@kdcore.hookimpl
def kdcore_register_losses(register):
    register("plain", dict)
"""


def _entry_points(site):
    eps = []
    for dist in md.distributions(path=[str(site)]):
        eps += [ep for ep in dist.entry_points if ep.group == "kdcore"]
    return sorted(eps, key=lambda e: e.name)


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("kd_")]:
        del sys.modules[name]


def test_good_plugin_registers_with_alias(site):
    write_fake_plugin(site, "kd_good", GOOD)
    pset = load_plugins(_entry_points(site))
    reg = pset.registry.lookup("loss", "fancy-l1")
    assert reg.name == "fancy" and reg.plugin == "kd-good" and reg.distribution == "kd-good"
    assert reg.summary == "A fancy L1."
    record = next(r for r in pset.records if r.name == "kd-good")
    assert record.status == "loaded" and record.components == [("loss", "fancy")]


@pytest.mark.parametrize(
    "code, reason",
    [
        (RAISES_ON_IMPORT, "boom at import"),
        (HOOK_RAISES, "hook exploded"),
        (BAD_NAME, "invalid loss name 'Bad_Name'"),
        (NOT_A_SUBCLASS, "is not a subclass of kdcore.Loss"),
    ],
)
def test_broken_plugin_is_isolated(site, code, reason):
    write_fake_plugin(site, "kd_broken", code)
    write_fake_plugin(site, "kd_good", GOOD)
    with pytest.warns(PluginLoadWarning, match="kd-broken"):
        pset = load_plugins(_entry_points(site))
    broken = next(r for r in pset.records if r.name == "kd-broken")
    assert broken.status == "failed" and reason in broken.reason
    assert broken.components == []
    assert pset.registry.lookup("loss", "fancy").plugin == "kd-good"
    assert "kd-broken" not in {r.plugin for regs in pset.registry.entries.values() for r in regs}
    assert pset.manager.get_plugin("kd-broken") is None


def test_strict_mode_turns_failures_into_errors(site, monkeypatch):
    write_fake_plugin(site, "kd_broken", RAISES_ON_IMPORT)
    monkeypatch.setenv("KDCORE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="kd-broken.*boom at import"):
        load_plugins(_entry_points(site))


def test_two_plugins_one_name(site):
    write_fake_plugin(site, "kd_good", GOOD)
    write_fake_plugin(site, "kd_same", SAME_NAME)
    pset = load_plugins(_entry_points(site))
    with pytest.raises(ComponentError) as err:
        pset.registry.lookup("loss", "fancy", where="losses[0].name")
    message = str(err.value)
    assert "losses[0].name" in message and "kd-good:fancy" in message and "kd-same:fancy" in message
    assert pset.registry.lookup("loss", "kd-same:fancy").cls.__name__ == "Other"
    assert pset.registry.lookup("loss", "kd-good:fancy").cls.__name__ == "Fancy"


def test_load_and_disable_env(site, monkeypatch):
    write_fake_plugin(site, "kd_good", GOOD)
    write_fake_plugin(site, "kd_same", SAME_NAME)
    monkeypatch.setenv("KDCORE_LOAD_PLUGINS", "kd-same")
    pset = load_plugins(_entry_points(site))
    assert {r.name: r.status for r in pset.records} == {"kdcore": "loaded", "kd-good": "disabled", "kd-same": "loaded"}
    assert pset.registry.lookup("loss", "fancy").plugin == "kd-same"
    monkeypatch.setenv("KDCORE_LOAD_PLUGINS", "")
    pset = load_plugins(_entry_points(site))
    assert [r.name for r in pset.records if r.status == "loaded"] == ["kdcore"]
    assert pset.registry.lookup("loss", "l1").plugin == "kdcore"  # the core's own always load
    monkeypatch.delenv("KDCORE_LOAD_PLUGINS")
    monkeypatch.setenv("KDCORE_DISABLE_PLUGINS", "kd-good")
    pset = load_plugins(_entry_points(site))
    assert next(r for r in pset.records if r.name == "kd-good").reason == "excluded by KDCORE_DISABLE_PLUGINS"


def test_unknown_name_suggests(site):
    pset = load_plugins([])
    with pytest.raises(ComponentError, match=r"did you mean 'l1'.*kdcore list losses"):
        pset.registry.lookup("loss", "l11", where="losses[0].name")


def test_teacher_names_fall_back_to_students():
    # the tiny test student is registered as student and teacher; bicubic only as teacher
    from kdcore.plugins import get_registry

    reg = get_registry()
    assert reg.lookup("teacher", "bicubic").kind == "teacher"
    assert reg.lookup("teacher", "tiny-sr").kind == "teacher"


def test_list_components_wildcards():
    assert kdcore.list_components("losses", "l*") == ["l1"]
    assert kdcore.list_components("losses", "*l1") == ["l1", "slow-l1"]
    assert "tiny-sr" in kdcore.list_components("student")


def test_cli_keeps_working_with_a_broken_plugin(tmp_path):
    write_fake_plugin(tmp_path, "kd_broken", RAISES_ON_IMPORT)
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "kdcore", "plugins", "--json"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    records = {r["name"]: r for r in json.loads(out.stdout)}
    assert records["kd-broken"]["status"] == "failed" and "boom at import" in records["kd-broken"]["reason"]
    assert "warning: plugin 'kd-broken'" in out.stderr
    out = subprocess.run([sys.executable, "-m", "kdcore", "list", "losses"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "l1" in out.stdout
    env["KDCORE_STRICT_PLUGINS"] = "1"
    env["KDCORE_LOAD_PLUGINS"] = "kd-broken"
    out = subprocess.run([sys.executable, "-m", "kdcore", "list", "losses"], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "kd-broken" in out.stderr and "Traceback" not in out.stderr


def test_name_with_trailing_newline_is_refused(site):
    write_fake_plugin(site, "kd_newline", BAD_NAME.replace('"Bad_Name"', '"edge\\n"'))
    with pytest.warns(PluginLoadWarning, match="invalid loss name"):
        pset = load_plugins(_entry_points(site))
    assert next(r for r in pset.records if r.name == "kd-newline").status == "failed"


def test_plugin_needing_a_newer_kdcore(site):
    write_fake_plugin(site, "kd_future", GOOD, requires=("kdcore>=99.0",))
    with pytest.warns(PluginLoadWarning, match=r"needs kdcore>=99.0, but kdcore 0.1.0 is installed"):
        pset = load_plugins(_entry_points(site))
    assert next(r for r in pset.records if r.name == "kd-future").status == "failed"
    with pytest.raises(ComponentError):
        pset.registry.lookup("loss", "fancy")
