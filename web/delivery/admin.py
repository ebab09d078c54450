from django.contrib import admin, messages
from django.utils.html import format_html

from messaging.core.location import accuracy_text, map_link
from messaging.outbox import store as outbox

from .models import Message


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "created_at",
        "direction",
        "protocol",
        "sender",
        "recipient",
        "user",
        "status",
        "attempts",
        "short_error",
        "sender_check",
    )
    list_filter = ("status", "direction", "protocol", "created_at")
    search_fields = (
        "user__username",
        "device__device_id",
        "sender",
        "recipient",
        "idempotency_key",
        "external_id",
        "authentication",
    )
    date_hierarchy = "created_at"
    list_select_related = ("user", "device")
    actions = ["retry_now"]
    # History must not be rewritten by hand: everything but the status is read-only.
    readonly_fields = (
        "direction",
        "protocol",
        "sender",
        "recipient",
        "subject",
        "text",
        "user",
        "device",
        "attempts",
        "last_error",
        "error_history",
        "idempotency_key",
        "external_id",
        "remote_id",
        "authentication",
        "position",
        "next_attempt_at",
        "lease_until",
        "created_at",
        "updated_at",
        "sent_at",
    )
    fields = readonly_fields[:8] + ("status",) + readonly_fields[8:]

    def has_add_permission(self, request) -> bool:
        return False

    def save_model(self, request, obj: Message, form, change: bool) -> None:
        """The status is the one field a person may set here; the outbox stores it (nothing else changes)."""
        if change and "status" in form.changed_data:
            outbox.set_status_by_hand(obj.pk, obj.status)

    @admin.display(description="last error")
    def short_error(self, obj: Message) -> str:
        return (obj.last_error[:60] + "...") if len(obj.last_error) > 60 else obj.last_error

    @admin.display(description="position")
    def position(self, obj: Message) -> str:
        """Where the device was (from its network), as a map link: for the operator; not sent unless shared."""
        if obj.latitude is None or obj.longitude is None:
            return "-"
        where = f"{obj.latitude:.4f}, {obj.longitude:.4f} {accuracy_text(obj.location_cep_km)}".strip()
        return format_html('<a href="{}">{}</a>', map_link(obj.latitude, obj.longitude, obj.location_cep_km), where)

    @admin.display(description="sender check")
    def sender_check(self, obj: Message) -> str:
        """The DMARC part of the verdict (``dmarc=pass (p=reject)``); the whole line is on the message's page."""
        for part in obj.authentication.split(";"):
            if part.strip().startswith("dmarc="):
                return part.strip().split(" header.from=")[0]
        return obj.authentication[:40]

    @admin.action(description="Retry now (re-queue selected failed/dead messages)")
    def retry_now(self, request, queryset) -> None:
        count = outbox.retry_now(queryset.values_list("pk", flat=True))
        skipped = queryset.count() - count
        self.message_user(
            request, f"{count} message(s) re-queued; the delivery sweep sends them shortly.", messages.SUCCESS
        )
        if skipped:
            self.message_user(request, f"{skipped} message(s) skipped (not failed/dead).", messages.WARNING)
