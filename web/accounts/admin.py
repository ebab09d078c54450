from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.urls import reverse
from django.utils.html import format_html

from .models import BlockedSender, Device, User


class DeviceInline(admin.TabularInline):
    model = Device
    extra = 0
    fields = ("network", "device_id", "nickname", "is_active", "registered_at")
    readonly_fields = ("registered_at",)


class BlockedSenderInline(admin.TabularInline):
    model = BlockedSender
    extra = 0
    fields = ("address", "kind", "created_at")
    readonly_fields = ("kind", "created_at")


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = (
        "username",
        "mailbox",
        "twilio_number",
        "contact_email",
        "is_active",
        "monthly_quota",
        "monthly_outbound_quota",
        "message_log",
    )
    list_filter = ("is_active", "is_staff")
    search_fields = ("username", "contact_email", "twilio_number", "devices__device_id")
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Messaging", {"fields": ("twilio_number", "monthly_quota", "monthly_outbound_quota", "contact_email")}),
        ("Location", {"fields": ("share_location",)}),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "password1", "password2")}),
        ("Messaging", {"fields": ("twilio_number", "monthly_quota", "monthly_outbound_quota", "contact_email")}),
    )
    inlines = [DeviceInline, BlockedSenderInline]

    @admin.display(description="mailbox")
    def mailbox(self, obj: User) -> str:
        return obj.mailbox

    @admin.display(description="messages")
    def message_log(self, obj: User) -> str:
        url = reverse("admin:delivery_message_changelist") + f"?user__id__exact={obj.pk}"
        return format_html('<a href="{}">message log</a>', url)


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("device_id", "network", "nickname", "owner", "is_active", "registered_at")
    list_filter = ("network", "is_active")
    search_fields = ("device_id", "nickname", "owner__username")
    autocomplete_fields = ("owner",)
    readonly_fields = ("registered_at",)


@admin.register(BlockedSender)
class BlockedSenderAdmin(admin.ModelAdmin):
    list_display = ("address", "kind", "user", "created_at")
    list_filter = ("kind",)
    search_fields = ("address", "user__username")
    autocomplete_fields = ("user",)
    readonly_fields = ("kind", "created_at")
