"""Keep-alive HTTP to one remote (``runtime/http.py`` ``HostPool``), against a local server over a real socket."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
import urllib3

from messaging.runtime.http import HostPool


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # each reply in one segment, no delayed-ACK stall

    def log_message(self, format, *args):  # quiet
        pass

    def do_GET(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/elsewhere":
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_port}/moved")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = f"{self.command} {self.path} host={self.headers['Host']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_requests_to_the_remotes_host_reuse_one_kept_alive_connection_of_its_pool(server):
    base = f"http://127.0.0.1:{server.server_port}/api"
    client = HostPool(base)
    for n in range(3):
        resp = client.request("POST", f"{base}/v1/messages?n={n}", body=b"x", retries=False, redirect=False)
        assert resp.status == 200
        assert resp.data.decode() == f"POST /api/v1/messages?n={n} host=127.0.0.1:{server.server_port}"
    pool = client.manager.connection_from_url(base)
    assert pool.num_requests == 3 and pool.num_connections == 1, "the host's own pool, one connection kept alive"


def test_another_host_and_a_followed_redirect_go_through_the_manager(server):
    base = f"http://127.0.0.1:{server.server_port}"
    client = HostPool(base)
    other = client.request("GET", f"http://localhost:{server.server_port}/x", retries=False, redirect=False)
    assert other.data.decode() == f"GET /x host=localhost:{server.server_port}"
    followed = client.request("GET", f"{base}/elsewhere", retries=urllib3.Retry(redirect=2), redirect=True)
    assert followed.status == 200 and followed.data.decode().startswith("GET /moved host=localhost")
    assert client.manager.connection_from_url(base).num_requests == 1, "only the redirect's first request"


def test_cleared_connections_are_opened_again(server):
    base = f"http://127.0.0.1:{server.server_port}"
    client = HostPool(base)
    assert client.request("GET", f"{base}/a", retries=False, redirect=False).status == 200
    client.clear()
    assert client.request("GET", f"{base}/b", retries=False, redirect=False).status == 200
