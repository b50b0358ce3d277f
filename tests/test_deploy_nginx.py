"""The nginx site passes `nginx -t` and gixy, and a real nginx running it in front of a
recording upstream does what docs/deployment.md says: request ids through, operators'
endpoints closed, bodies capped, JSON gzipped."""

import gzip
import http.client
import io
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import copier
import pytest
from conftest import DEPLOY_SLUG, REPO_ROOT, deploy_answer_sets, venv_tool
from rich.console import Console

from generator.harness import nginx
from generator.harness.load.runner import run_loadtest

ANSWER_SETS = list(deploy_answer_sets())
CERT_DIR = f"/etc/ssl/{DEPLOY_SLUG}/"


def site_of(root: Path) -> Path:
    return root / f"deploy/nginx/{DEPLOY_SLUG}.conf"


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TLS variant, its certificate paths moved to a self-signed pair made here."""
    base = tmp_path_factory.mktemp("tls")
    data = {
        "project_slug": DEPLOY_SLUG,
        "targets": ["nginx"],
        "nginx_tls": True,
        "nginx_server_name": "api.example.com",
    }
    root = base / "svc"
    copier.run_copy(str(REPO_ROOT), root, data=data, defaults=True, vcs_ref="HEAD", quiet=True)
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make a test certificate: apt-get install -y openssl"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=api.example.com", "-keyout", str(base / "privkey.pem")),
            *("-out", str(base / "fullchain.pem")),
        ],
        capture_output=True,
        check=True,
    )
    text = site_of(root).read_text()
    assert CERT_DIR in text
    site = base / "site.conf"
    site.write_text(text.replace(CERT_DIR, f"{base}/"))
    return site


def sites(deploy_sample: Callable[[str], Path], answers: str, tls_site: Path) -> Path:
    return tls_site if answers == "tls" else site_of(deploy_sample(answers))


@pytest.mark.parametrize("answers", [*ANSWER_SETS, "tls"])
def test_nginx_accepts_the_site(
    answers: str, deploy_sample: Callable[[str], Path], tls_site: Path, tmp_path: Path
) -> None:
    config = tmp_path / "nginx.conf"
    config.write_text(nginx.main_config(tmp_path, sites(deploy_sample, answers, tls_site)))
    nginx.check(config, tmp_path)


def gixy_findings(site: Path, tmp_path: Path) -> list[dict[str, str]]:
    wrapper = tmp_path / "gixy.conf"
    wrapper.write_text(f"events {{}}\nhttp {{\n    include {site};\n}}\n")
    report = subprocess.run(
        [venv_tool("gixy"), "--format", "json", str(wrapper)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings: list[dict[str, str]] = json.loads(report.stdout)
    return findings


@pytest.mark.parametrize("answers", [*ANSWER_SETS, "tls"])
def test_gixy_finds_nothing(
    answers: str, deploy_sample: Callable[[str], Path], tls_site: Path, tmp_path: Path
) -> None:
    assert gixy_findings(sites(deploy_sample, answers, tls_site), tmp_path) == []


def test_gixy_reads_the_included_site(deploy_sample: Callable[[str], Path], tmp_path: Path) -> None:
    """A planted host-spoofing header is found: gixy really analyses the included file."""
    planted = tmp_path / "planted.conf"
    text = site_of(deploy_sample("no-features")).read_text()
    planted.write_text(text.replace("Host $host;", "Host $http_host;"))
    assert [finding["plugin"] for finding in gixy_findings(planted, tmp_path)] == ["host_spoofing"]


class Recorder(BaseHTTPRequestHandler):
    """Answers every request with a large JSON echo of what it received."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, dict(self.headers)))
        body = json.dumps({"path": self.path, "pad": "x" * 4096}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def proxied(deploy_sample: Callable[[str], Path]) -> Iterator[int]:
    """Real nginx with the rendered site in front of the recorder; yields nginx's port."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        root = deploy_sample("all-features")
        with nginx.proxy(root, upstream_port=upstream.server_address[1], cpu=0) as running:
            yield running.port
    finally:
        upstream.shutdown()


def request(
    port: int, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST" if body else "GET", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_request_id_is_passed_through_or_made(proxied: int) -> None:
    Recorder.seen.clear()
    request(proxied, "/items", {"X-Request-Id": "client-id-123"})
    request(proxied, "/items")
    (_, sent), (_, made) = Recorder.seen
    assert sent["X-Request-Id"] == "client-id-123"
    assert len(made["X-Request-Id"]) == 32
    assert made["X-Forwarded-For"] == "127.0.0.1"
    assert "Connection" not in made  # upstream keep-alive: nginx sends no "close"


@pytest.mark.parametrize(
    "path",
    [
        "/metrics",
        "/metrics/",
        "/metrics?name[]=x",
        "/%6Detrics",
        "//metrics",
        "/health/detailed",
        "/health/detailed?x=1",
    ],
)
def test_operator_endpoints_never_reach_the_app(proxied: int, path: str) -> None:
    Recorder.seen.clear()
    status, _, _ = request(proxied, path)
    assert status == 404
    assert Recorder.seen == []


def test_large_bodies_are_refused_and_json_is_gzipped(proxied: int) -> None:
    Recorder.seen.clear()
    status, _, _ = request(proxied, "/items", body=b"x" * (1024 * 1024 + 1))
    assert status == 413
    assert Recorder.seen == []
    status, headers, body = request(proxied, "/health", {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(body))["path"] == "/health"


def test_loadtest_through_nginx_needs_the_nginx_target(tmp_path: Path) -> None:
    root = tmp_path / "svc"
    copier.run_copy(
        str(REPO_ROOT),
        root,
        data={"targets": ["docker"]},
        defaults=True,
        vcs_ref="HEAD",
        quiet=True,
    )
    out = io.StringIO()
    code = run_loadtest(
        root,
        ["nginx"],
        duration=1,
        connections=1,
        json_path=None,
        min_ratio=None,
        console=Console(file=out, width=200),
    )
    assert code == 2
    assert "--target nginx" in out.getvalue()
