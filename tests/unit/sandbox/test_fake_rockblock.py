"""The sandbox's fake RockBLOCK itself: MO posts signed with its key, retried until taken, in order."""

from __future__ import annotations

from messaging.satellite.rockblock import (
    verify_post,
)
from tests.unit.satellite.test_rockblock import IMEI


def test_mo_posts_are_signed_by_the_sandbox_key_retried_until_taken_and_in_order():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread
    from urllib.parse import parse_qs

    from messaging.sandbox.fake_rockblock import FakeRockBlock

    answers = iter([503, 200, 200])
    posts: list[dict] = []

    class Webhook(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            status = next(answers, 200)
            if status == 200:
                posts.append({k: v[-1] for k, v in parse_qs(body).items()})
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with FakeRockBlock(mo_url=f"http://127.0.0.1:{server.server_address[1]}/rockblock") as fake:
            fake.device_send(IMEI, b"first")
            fake.device_send(IMEI, b"second")
            fake.wait_for_mo(2, timeout=30)
            key = fake.public_key_file.read_text()
            assert fake.state()["mo_attempts"] == 3  # the first post was answered 503 and came again
    finally:
        server.shutdown()
    read = [verify_post(post, key) for post in posts]
    assert [bytes.fromhex(p.data) for p in read] == [b"first", b"second"]
    assert [p.momsn for p in read] == [0, 1] and read[0].latitude == 52.3867
