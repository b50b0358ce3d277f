"""The generated systemd unit booted for real: systemd as PID 1 in a podman container made from
the python stand-in's Debian root, the full preset installed as its deployment guide tells an
operator, against the project's embedded PostgreSQL and a redis-server on the host. What a
container changes against a real host: docs/testing.md, "The systemd unit"."""

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import copier
import pytest
from conftest import DEPLOY_SLUG, REPO_ROOT
from test_container import _free_port, _status, host_backing
from test_deploy_systemd import MAX_EXPOSURE, directives

from generator.images import Podman, database_in_container, ensure_systemd
from generator.presets import get_preset

pytestmark = pytest.mark.slow

PACKAGE = DEPLOY_SLUG.replace("-", "_")
PREFIX = PACKAGE.upper() + "_"
UNIT = f"{DEPLOY_SLUG}.service"
OPT = f"/opt/{DEPLOY_SLUG}"
ENV_FILE = f"/etc/{DEPLOY_SLUG}/{DEPLOY_SLUG}.env"
# Debian's socket directory: the service's /tmp is private, so the host socket goes under /run.
PG_SOCKET_DIR = "/run/postgresql"
HOST_CA = "/run/host-ca.crt"
# systemd's own bounds on a restart (RestartSec=2, TimeoutStartSec=60), plus the watchdog
# period or a stop; a loaded 2-core machine can take most of them to import two workers.
RESTART_WAIT_S = 75.0
# The watchdog period the watchdog test sets, instead of the unit's 30 s.
WATCHDOG_S = 4


@dataclass
class Machine:
    """A booted container and the service installed in it."""

    podman: Podman
    name: str
    port: int
    unit_file: Path
    start_s: float = 0.0  # `systemctl enable --now`, which returns at READY=1

    def run(self, *command: str, check: bool = True) -> str:
        """The command's output in the container; with `check`, it must succeed."""
        done = self.podman("exec", self.name, *command, check=False)
        assert not check or done.returncode == 0, f"{command}:\n{done.stdout}{done.stderr}"
        return done.stdout

    def succeeds(self, *command: str) -> bool:
        return self.podman("exec", self.name, *command, check=False).returncode == 0

    def show(self, *names: str) -> dict[str, str]:
        shown = self.run("systemctl", "show", UNIT, *(f"--property={name}" for name in names))
        return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)

    def journal(self) -> str:
        """The unit's state and its journal, for a failure's message."""
        status = self.run("systemctl", "status", "--no-pager", "--lines=0", UNIT, check=False)
        return status + self.run("journalctl", "--no-pager", "-o", "cat", "-u", UNIT, check=False)

    def wait_for(self, what: str, condition: Callable[[], bool]) -> float:
        """Seconds until `condition()` holds; fails with the journal after RESTART_WAIT_S."""
        started = time.monotonic()
        while not condition():
            assert time.monotonic() - started < RESTART_WAIT_S, f"{what}:\n{self.journal()}"
            time.sleep(0.1)
        return time.monotonic() - started


@pytest.fixture(scope="module")
def project() -> Iterator[Path]:
    """The full preset (it has the systemd target), rendered and locked."""
    answers = {"project_slug": DEPLOY_SLUG, **get_preset("full").answers()}
    # Outside pytest's temp root: the embedded PostgreSQL runs as its own user and needs to
    # reach its data directory (tests/conftest.py, private_dir).
    with tempfile.TemporaryDirectory(prefix="bulwark-systemd-") as tmp:
        root = Path(tmp) / "svc"
        copier.run_copy(
            str(REPO_ROOT), root, data=answers, defaults=True, vcs_ref="HEAD", quiet=True
        )
        subprocess.run(["uv", "lock", "--quiet"], cwd=root, check=True, timeout=600)
        yield root


def _checkout(root: Path, archive: Path) -> None:
    """The project's files as an operator's checkout has them: no venv, no local database."""
    local = {".venv", ".data", ".git"}
    with tarfile.open(archive, "w") as tar:
        for path in sorted(root.iterdir()):
            if path.name not in local:
                tar.add(path, arcname=path.name)


@pytest.fixture(scope="module")
def machine(project: Path, podman: Podman) -> Iterator[Machine]:
    """Boot, install as the generated systemd deployment page says, `systemctl start`."""
    python = (project / ".python-version").read_text(encoding="utf-8").strip()
    image = ensure_systemd(podman, python)
    with host_backing(project, ("DATABASE_URL", "REDIS_URL")) as backing:
        database_url, volumes = database_in_container(backing["DATABASE_URL"], PG_SOCKET_DIR)
        uv = shutil.which("uv")
        assert uv, "uv not found: .ci/bootstrap installs it"
        cache = subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True, check=True)
        name = f"bulwark-test-systemd-{os.getpid()}"
        podman(
            "run", "--detach", "--name", name, "--network=host", "--systemd=always",
            *_hybrid_cgroups(),
            *(f"--volume={volume}" for volume in volumes),
            # The operator's uv and (for speed) this machine's package cache; the host's CA
            # bundle for a package index reached through a proxy only the host trusts.
            f"--volume={Path(uv).resolve()}:/usr/local/bin/uv:ro",
            f"--volume={cache.stdout.strip()}:/root/.cache/uv",
            f"--volume={os.environ.get('SSL_CERT_FILE', '/etc/ssl/certs/ca-certificates.crt')}"
            f":{HOST_CA}:ro",
            image,
        )  # fmt: skip
        machine = Machine(podman, name, _free_port(), project / "deploy/systemd" / UNIT)
        try:
            _boot(machine)
            _install(machine, project, database_url, backing["REDIS_URL"])
            yield machine
        finally:
            podman("rm", "--force", "--time=0", name, check=False)


def _hybrid_cgroups() -> list[str]:
    """On a host with cgroup v1 and v2 side by side, the v2 tree for the container's systemd.

    With v1 alone a container's systemd gets no cgroup-empty events and, now and then, waits
    out TimeoutStopSec (45 s) before a restart; with the v2 tree it runs in hybrid mode, as
    the host does, and writes only below its own container's cgroup. A v2-only host needs
    nothing: podman gives the container its own cgroup2 namespace.
    """
    unified = Path("/sys/fs/cgroup/unified")
    return [f"--volume={unified}:{unified}"] if unified.is_dir() else []


def _boot(machine: Machine) -> None:
    booted = time.monotonic()
    # systemctl needs PID 1's private socket, which appears a moment after the container starts.
    while not machine.succeeds("test", "-S", "/run/systemd/private"):
        assert time.monotonic() - booted < RESTART_WAIT_S, "systemd did not boot in the container"
        time.sleep(0.1)
    state = machine.run("systemctl", "is-system-running", "--wait", check=False)
    assert state == "running\n", machine.run("systemctl", "--failed", "--no-pager")


def _install(machine: Machine, project: Path, database_url: str, redis_url: str) -> None:
    """The steps of the generated systemd deployment page, in its order."""
    run = machine.run
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "checkout.tar"
        _checkout(project, archive)
        machine.podman("cp", str(archive), f"{machine.name}:/tmp/checkout.tar")
    run("install", "-d", OPT, f"/etc/{DEPLOY_SLUG}")
    run("tar", "-xf", "/tmp/checkout.tar", "-C", OPT, "--no-same-owner")
    run(
        "env", f"SSL_CERT_FILE={HOST_CA}", "UV_NATIVE_TLS=1", "UV_PYTHON_DOWNLOADS=never",
        "uv", "sync", "--quiet", "--frozen", "--no-dev", "--no-editable", "--compile-bytecode",
        "--project", OPT,
    )  # fmt: skip
    systemd = f"{OPT}/deploy/systemd"
    run("install", "-m", "0640", f"{systemd}/{DEPLOY_SLUG}.env.example", ENV_FILE)
    # What the operator fills in: the database, Redis, and a port free on this shared host.
    filled = {
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, f"{PREFIX}PORT": str(machine.port),
    }  # fmt: skip
    for key, value in filled.items():
        run("sed", "-i", f"s|^{key}=.*|{key}={value}|", ENV_FILE)
    run("install", "-m", "0644", f"{systemd}/{UNIT}", "/etc/systemd/system/")
    run(
        "systemd-run", "--wait", "--pipe", "--quiet", f"--property=EnvironmentFile={ENV_FILE}",
        "--property=DynamicUser=yes", "--property=PrivateUsers=yes", f"{OPT}/.venv/bin/python",
        "-m", f"{PACKAGE}.db.migrate",
    )  # fmt: skip
    run("systemctl", "daemon-reload")
    started = time.monotonic()
    run("systemctl", "enable", "--now", UNIT)
    machine.start_s = time.monotonic() - started


def declared(unit: Path) -> dict[str, str]:
    """The unit file's directives, the last value of a repeated key (the one systemd keeps)."""
    return {key: values[-1] for key, values in directives(unit).items()}


# ---- the checks -------------------------------------------------------------------------------


def test_start_returns_once_a_worker_said_ready_and_it_serves(machine: Machine) -> None:
    # Type=notify: `systemctl start` returned, so READY=1 arrived; /health answers at once.
    shown = machine.show("Type", "ActiveState", "SubState", "NRestarts", "StatusErrno")
    assert shown == {
        "Type": "notify", "ActiveState": "active", "SubState": "running", "NRestarts": "0",
        "StatusErrno": "0",
    }  # fmt: skip
    assert _status(machine.port, "/health") == 200
    assert _status(machine.port, "/ready") == 200
    print(f"\nsystemctl enable --now (to READY=1): {machine.start_s:.2f} s")


def test_the_service_runs_sandboxed(machine: Machine) -> None:
    """The unit's hardening as systemd applied it, read from the main process itself."""
    main = machine.show("MainPID")["MainPID"]
    status = dict(
        line.split(":\t", 1) for line in machine.run("cat", f"/proc/{main}/status").splitlines()
    )
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # SystemCallFilter: a filter is loaded
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == 0
    assert int(status["Uid"].split()[0]) >= 61184  # DynamicUser's range
    mounts = machine.run("cat", f"/proc/{main}/mountinfo")
    assert re.search(r" / / ro[, ]", mounts), "ProtectSystem=strict: / read-only"
    assert re.search(r"systemd-private-\S+ /tmp ", mounts), "PrivateTmp"
    assert re.search(r"inaccessible/dir /home ", mounts), "ProtectHome"
    # LimitNOFILE=65536, or the container's own hard limit where that is lower (systemd here
    # lacks CAP_SYS_RESOURCE and sets the closest value it may).
    ceiling = _open_files(machine.run("cat", "/proc/1/limits"))[1]
    wanted = min(int(declared(machine.unit_file)["LimitNOFILE"]), ceiling)
    assert _open_files(machine.run("cat", f"/proc/{main}/limits")) == (wanted, wanted)
    for namespace in ("mnt", "user", "ipc", "uts"):
        own = machine.run("readlink", f"/proc/{main}/ns/{namespace}")
        assert own != machine.run("readlink", f"/proc/1/ns/{namespace}"), namespace
    # systemd says so when it skips a setting it cannot apply ("..., ignoring").
    said = [line for line in machine.journal().splitlines() if not line.startswith("{")]
    assert [line for line in said if "ignoring" in line.lower()] == [], said


def _open_files(limits: str) -> tuple[int, int]:
    found = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.M)
    assert found, limits
    return int(found.group(1)), int(found.group(2))


def test_systemd_reports_the_units_hardening(machine: Machine) -> None:
    unit = declared(machine.unit_file)
    # Properties systemd reports under the unit file's own name and spelling.
    same = [
        "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
        "PrivateUsers", "PrivateIPC", "ProtectHostname", "ProtectClock", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc",
        "ProcSubset", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID",
        "LockPersonality", "RemoveIPC", "KeyringMode", "UMask", "PrivateMounts", "DevicePolicy",
        "MemoryDenyWriteExecute", "DynamicUser", "Restart", "NotifyAccess", "KillMode",
    ]  # fmt: skip
    reshaped = ["CapabilityBoundingSet", "AmbientCapabilities", "RestrictAddressFamilies",
                "SystemCallArchitectures"]  # fmt: skip
    # The filter itself is checked on the process (a seccomp filter is loaded).
    on_the_process = {"SystemCallFilter", "SystemCallErrorNumber"}
    text = machine.unit_file.read_text(encoding="utf-8")
    hardening = text[text.index("# Hardening") : text.index("[Install]")]
    lines = [line for line in hardening.splitlines() if "=" in line and line[0] != "#"]
    keys = {line.split("=", 1)[0] for line in lines}
    assert keys - {*same, *reshaped, *on_the_process} == set(), "a hardening line goes unchecked"
    shown = machine.show(*same, *reshaped, "WatchdogUSec", "LimitNOFILE")
    assert {key: shown[key] for key in same} == {key: unit[key] for key in same}
    assert shown["CapabilityBoundingSet"] == shown["AmbientCapabilities"] == ""
    assert shown["RestrictAddressFamilies"].split() == unit["RestrictAddressFamilies"].split()
    assert shown["SystemCallArchitectures"] == unit["SystemCallArchitectures"]
    assert shown["WatchdogUSec"] == unit["WatchdogSec"] + "s"
    assert shown["LimitNOFILE"] == unit["LimitNOFILE"]


def _exposure(machine: Machine, *target: str) -> float:
    analysed = machine.run("systemd-analyze", "security", "--no-pager", *target, check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", analysed)
    assert found, analysed
    return float(found.group(1))


def test_live_exposure_score_is_the_unit_files(machine: Machine) -> None:
    """The loaded unit scores no worse than its file read offline: nothing declared was lost."""
    live = _exposure(machine, UNIT)
    offline = _exposure(machine, "--offline=true", f"/etc/systemd/system/{UNIT}")
    print(f"\nsystemd-analyze security {UNIT}: {live} booted, {offline} offline")
    assert live <= offline <= MAX_EXPOSURE


def _restarted(machine: Machine, before: dict[str, str], cause: str) -> str:
    """Wait for systemd's next automatic restart after `before` (a `show` of NRestarts and
    MainPID), then for the new main process to be ready; say how long each took."""

    def counted() -> bool:
        return machine.show("NRestarts")["NRestarts"] == str(int(before["NRestarts"]) + 1)

    def ready() -> bool:
        now = machine.show("ActiveState", "MainPID")
        return now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"])

    stopped = machine.wait_for(f"no restart after {cause}", counted)
    started = machine.wait_for(f"not active again after {cause}", ready)
    assert _status(machine.port, "/health") == 200
    return f"{cause} -> restart scheduled {stopped:.2f} s, active again {started:.2f} s later"


def test_a_killed_main_process_is_restarted(machine: Machine) -> None:
    before = machine.show("MainPID", "NRestarts")
    machine.run("systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", UNIT)
    print("\n" + _restarted(machine, before, "SIGKILL of the main process"))


def test_the_watchdog_restarts_a_service_whose_loops_stopped(machine: Machine) -> None:
    """Fed while the workers' loops turn; starved when every process stops, then restarted.

    A runtime drop-in shortens WatchdogSec from 30 s to WATCHDOG_S so the test waits seconds;
    the workers read the period from systemd (WATCHDOG_USEC) and beat at half of it either way.
    """
    dropin = f"/run/systemd/system/{UNIT}.d"
    machine.run("mkdir", "-p", dropin)
    machine.run("sh", "-c", f"printf '[Service]\\nWatchdogSec={WATCHDOG_S}\\n' >{dropin}/t.conf")
    machine.run("systemctl", "daemon-reload")
    machine.run("systemctl", "restart", UNIT)
    before = machine.show("NRestarts", "MainPID")
    # Three periods with no restart: WATCHDOG=1 arrives from the workers' loops.
    time.sleep(3 * WATCHDOG_S)
    assert machine.show("NRestarts", "MainPID") == before, machine.journal()
    machine.run("systemctl", "kill", "--signal=SIGSTOP", UNIT)  # every process: no loop turns
    print("\n" + _restarted(machine, before, "SIGSTOP of every process"))
    assert "Watchdog timeout" in machine.journal()
