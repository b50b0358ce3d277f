"""Real nginx in front of a server under test, configured by the project's own site file.

The rendered `deploy/nginx/<slug>.conf` is used as it is, except for two things a test machine
needs: the listen lines move to a free loopback port and the upstream points at the server's
port. Timeouts, headers, blocked paths and the upstream's balancing stay as rendered, so what
is measured is what would be deployed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from generator.harness import servers

INSTALL_HINT = "sudo apt-get install -y nginx"
_SBIN = Path("/usr/sbin/nginx")
_LISTEN = re.compile(r"^(\s*)listen\s+[^;]*;\n", re.MULTILINE)
_UPSTREAM_SERVER = re.compile(r"^(\s*)server\s+127\.0\.0\.1:\d+", re.MULTILINE)


class NginxError(RuntimeError):
    """The site file is missing or unusable, or nginx refused it or did not start."""


def binary() -> str | None:
    """nginx's path; Debian installs it in /usr/sbin, which a user's PATH may lack."""
    return shutil.which("nginx") or (str(_SBIN) if _SBIN.exists() else None)


def site_file(root: Path) -> Path:
    """The project's rendered nginx site; NginxError when the nginx target was not chosen."""
    sites = sorted((root / "deploy" / "nginx").glob("*.conf"))
    if len(sites) != 1:
        raise NginxError(f"{root} has no deploy/nginx/<slug>.conf: render it with --target nginx")
    return sites[0]


def loopback_site(site: str, *, listen_port: int, upstream_port: int) -> str:
    """The site with one plain listen on 127.0.0.1:listen_port and its upstream server at
    127.0.0.1:upstream_port; a TLS site is refused (the harness speaks plain HTTP)."""
    listens = _LISTEN.findall(site)
    if not listens:
        raise NginxError("the nginx site has no listen directive")
    if " ssl" in site and "listen 443" in site:
        raise NginxError("the nginx site terminates TLS; load-test a site rendered without it")
    first = True

    def relisten(match: re.Match[str]) -> str:
        nonlocal first
        keep, first = first, False
        return f"{match.group(1)}listen 127.0.0.1:{listen_port};\n" if keep else ""

    moved = _LISTEN.sub(relisten, site)
    pointed, servers = _UPSTREAM_SERVER.subn(rf"\g<1>server 127.0.0.1:{upstream_port}", moved)
    if servers != 1:
        raise NginxError(f"expected one loopback upstream server in the site, found {servers}")
    return pointed


def main_config(prefix: Path, site: Path) -> str:
    """A whole nginx.conf around `site`, with every writable path under `prefix`."""
    # As root, workers would drop to "nobody", which cannot enter a private temp directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        "events {\n    worker_connections 4096;\n}\n"
        f"http {{\n    access_log off;\n{temp}\n    include {site};\n}}\n"
    )


@dataclass(frozen=True, slots=True)
class Proxied:
    """A server reached through nginx: the URL is nginx's, both must stay alive."""

    server: servers.RunningServer
    proxy: servers.RunningServer

    def url(self, path: str) -> str:
        return self.proxy.url(path)

    def check_alive(self) -> None:
        self.proxy.check_alive()
        self.server.check_alive()

    def cpu_s(self) -> float:
        """The proxy's CPU and the server's: both serve every request."""
        return self.proxy.cpu_s() + self.server.cpu_s()


def check(config: Path, prefix: Path) -> None:
    """`nginx -t` on a whole config; NginxError with nginx's words when it refuses it."""
    nginx = binary()
    if nginx is None:
        raise NginxError(f"nginx not found; install it with: {INSTALL_HINT}")
    tested = subprocess.run(
        [nginx, "-t", "-q", "-p", str(prefix), "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    if tested.returncode != 0:
        raise NginxError(f"nginx -t refused {config}:\n{tested.stderr.strip()}")


@contextmanager
def proxy(root: Path, *, upstream_port: int, cpu: int) -> Iterator[servers.RunningServer]:
    """Run nginx with the project's site in front of 127.0.0.1:upstream_port, pinned to `cpu`,
    until /health answers 200 through it; stop it when the block exits."""
    nginx = binary()
    if nginx is None:
        raise NginxError(f"nginx not found; install it with: {INSTALL_HINT}")
    port = servers.free_port()
    site_text = loopback_site(
        site_file(root).read_text(encoding="utf-8"), listen_port=port, upstream_port=upstream_port
    )
    with tempfile.TemporaryDirectory(prefix="bulwark-nginx-") as tmp:
        prefix = Path(tmp)
        site = prefix / "site.conf"
        site.write_text(site_text, encoding="utf-8")
        config = prefix / "nginx.conf"
        config.write_text(main_config(prefix, site), encoding="utf-8")
        check(config, prefix)
        log = prefix / "nginx.log"
        command = ["taskset", "-c", str(cpu), nginx, "-p", tmp, "-c", str(config)]
        with servers.spawn("nginx", [*command, "-g", "daemon off;"], port=port, log=log) as running:
            yield running


@contextmanager
def front(root: Path, server: servers.RunningServer, *, cpu: int) -> Iterator[Proxied]:
    """`server` behind the project's nginx (see `proxy`)."""
    with proxy(root, upstream_port=server.port, cpu=cpu) as running:
        yield Proxied(server=server, proxy=running)
