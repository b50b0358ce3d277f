"""The systemd unit verifies, scores ≤ 2.0 on systemd's exposure scale, and runs the workers
the answers ask for with staggered recycling (docs/deployment.md)."""

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import copier
import pytest
from conftest import DEPLOY_SLUG, REPO_ROOT, deploy_answer_sets

ANSWER_SETS = list(deploy_answer_sets())
MAX_EXPOSURE = 2.0


def unit_of(root: Path) -> Path:
    return root / f"deploy/systemd/{DEPLOY_SLUG}.service"


def directives(unit: Path) -> dict[str, list[str]]:
    """Every `Key=value` of the unit, values in order (keys such as SystemCallFilter repeat)."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def env_file(root: Path) -> dict[str, str]:
    lines = (root / f"deploy/systemd/{DEPLOY_SLUG}.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def exposure(unit: Path) -> float:
    analysed = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", analysed.stdout)
    assert found, analysed.stdout + analysed.stderr
    return float(found.group(1))


@pytest.mark.parametrize("answers", ANSWER_SETS)
def test_systemd_verifies_the_unit(answers: str, deploy_sample: Callable[[str], Path]) -> None:
    verified = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_of(deploy_sample(answers)))],
        capture_output=True,
        text=True,
        check=False,
    )
    # The install paths (/opt/..., /etc/...) do not exist on a build machine.
    absent_install_path = ("No such file or directory", "is not executable")
    problems = [
        line
        for line in verified.stderr.splitlines()
        if line.strip() and not any(reason in line for reason in absent_install_path)
    ]
    assert problems == [], verified.stderr


@pytest.mark.parametrize("answers", ANSWER_SETS)
def test_exposure_score_is_at_most_two(answers: str, deploy_sample: Callable[[str], Path]) -> None:
    score = exposure(unit_of(deploy_sample(answers)))
    print(f"systemd-analyze security exposure ({answers}): {score}")
    assert score <= MAX_EXPOSURE


def test_exposure_check_reads_the_real_score(
    deploy_sample: Callable[[str], Path], tmp_path: Path
) -> None:
    """The score parser is not fooled: the unit without its hardening scores far worse."""
    unit = unit_of(deploy_sample("no-features"))
    bare = tmp_path / unit.name
    text = unit.read_text()
    bare.write_text(text[: text.index("# Hardening")] + text[text.index("[Install]") :])
    assert exposure(bare) > 5.0 > MAX_EXPOSURE


@pytest.mark.parametrize("answers", ANSWER_SETS)
def test_workers_feed_the_watchdog_after_the_loop_monitor_would_act(
    answers: str, deploy_sample: Callable[[str], Path]
) -> None:
    """systemd's watchdog is the backstop: a stuck worker ends itself first (status 70) and is
    replaced alone; systemd restarts the service only when no worker's loop turns."""
    root = deploy_sample(answers)
    unit = directives(unit_of(root))
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["all"]  # the workers notify, not uvicorn's supervisor
    watchdog_sec = int(unit["WatchdogSec"][0])
    loop_watchdog = env_file(root).get("ORDERS_API_LOOP_WATCHDOG_S")
    has_monitor = "loop_monitor" in deploy_answer_sets()[answers]["features"]  # type: ignore[operator]
    assert (loop_watchdog is not None) == has_monitor
    if loop_watchdog is not None:
        assert 0 < float(loop_watchdog) < watchdog_sec


@pytest.mark.parametrize("answers", ANSWER_SETS)
def test_unit_restarts_on_failure_as_a_dynamic_user(
    answers: str, deploy_sample: Callable[[str], Path]
) -> None:
    root = deploy_sample(answers)
    unit = directives(unit_of(root))
    assert unit["Restart"] == ["on-failure"]
    assert unit["DynamicUser"] == ["yes"]
    assert unit["EnvironmentFile"] == [f"/etc/{DEPLOY_SLUG}/{DEPLOY_SLUG}.env"]
    assert unit["ExecStart"] == [f"/opt/{DEPLOY_SLUG}/.venv/bin/python -m orders_api"]
    assert unit["KillMode"] == ["mixed"]
    settings = env_file(root)
    workers = deploy_answer_sets()[answers].get("systemd_workers", 0)
    assert settings["ORDERS_API_WORKERS"] == str(workers)
    assert int(settings["ORDERS_API_LIMIT_MAX_REQUESTS"]) > 0
    assert (
        0
        < int(settings["ORDERS_API_LIMIT_MAX_REQUESTS_JITTER"])
        < int(settings["ORDERS_API_LIMIT_MAX_REQUESTS"])
    )
    metrics = "metrics" in deploy_answer_sets()[answers]["features"]  # type: ignore[operator]
    assert ("Environment" in unit) == metrics
    if metrics:
        assert unit["Environment"] == [f"PROMETHEUS_MULTIPROC_DIR=%t/{DEPLOY_SLUG}"]
        assert unit["RuntimeDirectory"] == [DEPLOY_SLUG]


def test_worker_count_outside_its_range_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "svc"
    with pytest.raises(ValueError, match="systemd_workers"):
        copier.run_copy(
            str(REPO_ROOT),
            dest,
            data={"targets": ["systemd"], "systemd_workers": 65},
            defaults=True,
            vcs_ref="HEAD",
            quiet=True,
        )
    assert not dest.exists()
