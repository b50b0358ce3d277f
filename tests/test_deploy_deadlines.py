"""The deadline chain (docs/architecture.md) lines up in every rendered answer set.

Each outer layer waits longer than the one inside it, so the innermost timeout fires first
and the client gets the app's own 504 rather than a proxy's cut connection; each supervisor
waits longer than the drain it triggers. Values are read from the rendered files: the
settings' defaults, overridden by what each deployment file sets in the environment.
"""

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import DEPLOY_SLUG, deploy_answer_sets

PREFIX = "ORDERS_API_"
# The request timeout a service without the `timeout` feature is still measured against.
DEFAULT_REQUEST_TIMEOUT_S = 30.0
_NUMBER = r"([0-9][0-9_]*(?:\.[0-9_]+)?)"


def setting_default(settings: str, field: str) -> float | None:
    """A field's default in the rendered settings.py; None when the field is not rendered."""
    declared = re.search(rf"^\s*{field}\s*:[^=\n]*=\s*(.*)$", settings, re.MULTILINE)
    if declared is None:
        return None
    value = re.match(rf"(?:Field\(\s*(?:default\s*=\s*)?)?{_NUMBER}", declared.group(1))
    assert value, f"settings.py: cannot read the default of {field}: {declared.group(0).strip()}"
    return float(value.group(1).replace("_", ""))


def seconds(text: str, pattern: str, where: str) -> float:
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{where}: no match for {pattern}"
    return float(found.group(1))


def env_lines(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def deadline_violations(root: Path) -> list[str]:
    """Every §4 inequality that does not hold in the project at `root`, as a sentence."""
    settings = next(root.glob("src/*/settings.py")).read_text()
    request_timeout = setting_default(settings, "request_timeout_s")
    defaults = {
        "REQUEST_TIMEOUT_S": DEFAULT_REQUEST_TIMEOUT_S
        if request_timeout is None
        else request_timeout,
        "GRACEFUL_SHUTDOWN_S": setting_default(settings, "graceful_shutdown_s"),
        "STATEMENT_TIMEOUT_MS": setting_default(settings, "statement_timeout_ms"),
        "POOL_ACQUIRE_TIMEOUT_S": setting_default(settings, "pool_acquire_timeout_s"),
    }
    problems: list[str] = []

    def check(where: str, overrides: dict[str, str], outer: dict[str, float]) -> None:
        """The process's deadlines under `overrides` (its environment), then its supervisor's."""
        value = {
            name: float(overrides.get(PREFIX + name, default)) if default is not None else None
            for name, default in defaults.items()
        }
        request, drain = value["REQUEST_TIMEOUT_S"], value["GRACEFUL_SHUTDOWN_S"]
        assert request is not None
        assert drain is not None
        if value["STATEMENT_TIMEOUT_MS"] is not None:
            statement = value["STATEMENT_TIMEOUT_MS"] / 1000
            if not request > statement:
                problems.append(f"{where}: request timeout {request} s <= statement {statement} s")
        acquire = value["POOL_ACQUIRE_TIMEOUT_S"]
        if acquire is not None and not request > acquire:
            problems.append(f"{where}: request timeout {request} s <= pool acquire {acquire} s")
        if not drain > request:
            problems.append(f"{where}: drain {drain} s <= request timeout {request} s")
        for name, limit in outer.items():
            inner = request if name == "proxy_read_timeout" else drain
            if not limit > inner:
                problems.append(f"{where}: {name} {limit} s <= {inner} s inside it")

    nginx_site = root / f"deploy/nginx/{DEPLOY_SLUG}.conf"
    systemd_env = root / f"deploy/systemd/{DEPLOY_SLUG}.env.example"
    if nginx_site.exists():
        read = seconds(nginx_site.read_text(), r"proxy_read_timeout (\d+)s;", "nginx")
        env = env_lines(systemd_env) if systemd_env.exists() else {}
        check("nginx", env, {"proxy_read_timeout": read})
    if systemd_env.exists():
        unit = (root / f"deploy/systemd/{DEPLOY_SLUG}.service").read_text()
        stop = seconds(unit, r"^TimeoutStopSec=(\d+)$", "systemd unit")
        check("systemd", env_lines(systemd_env), {"TimeoutStopSec": stop})
    compose_file = root / "deploy/docker/compose.yaml"
    if compose_file.exists():
        app = yaml.safe_load(compose_file.read_text())["services"]["app"]
        grace = seconds(app["stop_grace_period"], r"^(\d+)s$", "compose stop_grace_period")
        check("compose", app["environment"], {"stop_grace_period": grace})
    k8s = root / "deploy/k8s/base"
    if k8s.exists():
        pod = yaml.safe_load((k8s / "deployment.yaml").read_text())["spec"]["template"]["spec"]
        (app,) = pod["containers"]
        pre_stop = app["lifecycle"]["preStop"]["sleep"]["seconds"]
        config = env_lines(k8s / "config.env")
        drain = float(
            config.get(PREFIX + "GRACEFUL_SHUTDOWN_S", defaults["GRACEFUL_SHUTDOWN_S"] or 0)
        )
        grace = pod["terminationGracePeriodSeconds"]
        if not grace > pre_stop + drain:
            problems.append(
                f"kubernetes: terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + "
                f"drain {drain}"
            )
        check("kubernetes", config, {})
    return problems


@pytest.mark.parametrize("answers", list(deploy_answer_sets()))
def test_deadlines_line_up(answers: str, deploy_sample: Callable[[str], Path]) -> None:
    assert deadline_violations(deploy_sample(answers)) == []


@pytest.mark.parametrize(
    ("path", "old", "new", "complaint"),
    [
        (
            f"deploy/nginx/{DEPLOY_SLUG}.conf",
            "proxy_read_timeout 35s",
            "proxy_read_timeout 30s",
            "nginx: proxy_read_timeout 30.0 s <= 30.0 s",
        ),
        (
            f"deploy/systemd/{DEPLOY_SLUG}.service",
            "TimeoutStopSec=45",
            "TimeoutStopSec=35",
            "systemd: TimeoutStopSec 35.0 s <= 35.0 s",
        ),
        (
            "deploy/k8s/base/deployment.yaml",
            "terminationGracePeriodSeconds: 45",
            "terminationGracePeriodSeconds: 40",
            "kubernetes: terminationGracePeriodSeconds 40 <= preStop 5 + drain 35.0",
        ),
        (
            "deploy/docker/compose.yaml",
            "stop_grace_period: 45s",
            "stop_grace_period: 30s",
            "compose: stop_grace_period 30.0 s <= 35.0 s",
        ),
        (
            f"deploy/systemd/{DEPLOY_SLUG}.env.example",
            "GRACEFUL_SHUTDOWN_S=35",
            "GRACEFUL_SHUTDOWN_S=20",
            "systemd: drain 20.0 s <= request timeout 30.0 s",
        ),
        (
            "src/orders_api/settings.py",
            "default=25_000",
            "default=30_000",
            "request timeout 30.0 s <= statement 30.0 s",
        ),
    ],
)
def test_a_broken_deadline_is_reported(
    path: str,
    old: str,
    new: str,
    complaint: str,
    deploy_sample: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    """The check reads the numbers it claims to: a planted change is named."""
    source = deploy_sample("postgres")
    root = tmp_path / "svc"
    for file in [*source.glob("deploy/**/*"), *source.glob("src/*/settings.py")]:
        if file.is_file():
            copy = root / file.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(file.read_text())
    target = root / path
    assert old in target.read_text()
    target.write_text(target.read_text().replace(old, new))
    violations = deadline_violations(root)
    assert any(complaint in violation for violation in violations), violations
