"""The HTTP side, as one Ray Serve deployment (Starlette ingress). It only adapts HTTP: what each webhook
decides is :class:`~messaging.intake.webhook_handler.WebhookHandler`'s.

* ``POST /sms``   Twilio's inbound-SMS webhook (:meth:`WebhookHandler.sms`).
* ``POST /swarm`` the Hive's push webhook (:meth:`WebhookHandler.swarm`).
* ``POST /rockblock`` RockBLOCK's MO webhook (:meth:`WebhookHandler.rockblock`).
* ``GET /healthz`` liveness.
* everything else: the Django admin (Django's ASGI app mounted at ``/``).
"""

from ray import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from messaging.core.types import Channel
from messaging.intake.user_store import LocalUsers
from messaging.intake.webhook_handler import Reply, WebhookHandler
from messaging.runtime.config import Config
from messaging.runtime.djangoenv import ensure_django
from messaging.runtime.pool import NamedPool


def as_response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type)


def make_app(handler: WebhookHandler, admin: object | None = None) -> Starlette:
    """The webhooks' HTTP routes over ``handler``; ``admin`` (an ASGI app) is mounted at ``/`` when given.

    Plain Starlette routes: the endpoints take the raw request and answer a ``Reply``, so FastAPI's
    dependency solving and response serialisation (on every webhook) would buy nothing."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def sms(request: Request) -> Response:
        peer = request.client.host if request.client else "?"
        signature = request.headers.get("x-twilio-signature", "")
        return as_response(await handler.sms(await request.body(), signature, peer))

    async def swarm(request: Request) -> Response:
        secret = request.headers.get("x-swarm-secret", "")
        return as_response(await handler.swarm(await request.body(), secret))

    async def rockblock(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        return as_response(await handler.rockblock(await request.body(), content_type))

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/sms", sms, methods=["POST"]),
        Route("/swarm", swarm, methods=["POST"]),
        Route("/rockblock", rockblock, methods=["POST"]),
    ]
    if admin is not None:
        routes.append(Mount("/", admin))
    return Starlette(routes=routes)


def django_admin() -> object:
    """Django's ASGI app (the admin and its static files)."""
    ensure_django()
    from django.core.asgi import get_asgi_application  # Django's app loads only after ensure_django()

    return get_asgi_application()


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
@serve.ingress()
class Webhooks:
    """One replica: the handler, storing with a user desk of its own (``LocalUsers``; ``senders``: the sender pools
    by channel, whom it names to kick); its routes built on the replica (Serve calls ``__serve_build_asgi_app__``
    after ``__init__``)."""

    def __init__(self, config: Config, senders: dict[Channel, NamedPool], mount_admin: bool = True):
        self.handler = WebhookHandler(config, LocalUsers(config, senders))
        self.mount_admin = mount_admin

    def __serve_build_asgi_app__(self) -> Starlette:
        return make_app(self.handler, django_admin() if self.mount_admin else None)
