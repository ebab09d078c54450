"""Device lookup for provisioning tools: POST a device id and its claim code, get the mailbox address and phone
number assigned to it (JSON). A wrong code is answered exactly as an unknown id (404), and look-ups are rate limited
per client address. No cookies, no session: the claim code is the credential (so no CSRF token either)."""

from __future__ import annotations

import json
import logging

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from web.accounts.devices import parse_device_id
from web.accounts.models import Device

from . import ratelimit

log = logging.getLogger(__name__)

NOT_FOUND = {"error": "no device with this id and claim code"}


def _params(request) -> dict | None:
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None
    return request.POST.dict()


@csrf_exempt
@never_cache
@require_POST
def device_lookup(request):
    if not ratelimit.allow("lookup-ip", ratelimit.client_ip(request)):
        response = JsonResponse({"error": "too many look-ups; try again later"}, status=429)
        response["Retry-After"] = str(ratelimit.LIMITS["lookup-ip"][1])
        return response
    params = _params(request)
    if params is None:
        return JsonResponse({"error": 'send JSON: {"device_id": ..., "claim_code": ...}'}, status=400)
    device_id = parse_device_id(str(params.get("device_id", "")))
    code = str(params.get("claim_code", "") or "")
    if device_id is None or not code:
        return JsonResponse({"error": "device_id (a number) and claim_code are required"}, status=400)
    device = Device.objects.select_related("owner").filter(device_id=device_id).first()
    if device is None:
        Device.no_such_device(code)
        return JsonResponse(NOT_FOUND, status=404)
    if not device.check_claim_code(code):
        return JsonResponse(NOT_FOUND, status=404)
    owner = device.owner if device.is_active else None
    log.info("device lookup device=%s claimed=%s", device.device_id, owner is not None)
    return JsonResponse(
        {
            "device_id": device.device_id,
            "claimed": owner is not None,
            "mailbox": owner.mailbox if owner else None,
            "phone_number": owner.twilio_number if owner else None,
        }
    )
