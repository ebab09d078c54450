import csv

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from .devices import import_inventory, read_inventory
from .models import BlockedSender, Contact, Device, User, generate_claim_code, normalise_claim_code


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


class ContactInline(admin.TabularInline):
    model = Contact
    extra = 0
    fields = ("name", "address", "kind", "created_at")
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
        (
            "Messaging",
            {
                "fields": (
                    "twilio_number",
                    "monthly_quota",
                    "monthly_outbound_quota",
                    "contact_email",
                    "contact_email_verified",
                    "contacts_only",
                )
            },
        ),
        ("Location", {"fields": ("share_location",)}),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "password1", "password2")}),
        ("Messaging", {"fields": ("twilio_number", "monthly_quota", "monthly_outbound_quota", "contact_email")}),
    )
    inlines = [DeviceInline, ContactInline, BlockedSenderInline]

    @admin.display(description="mailbox")
    def mailbox(self, obj: User) -> str:
        return obj.mailbox

    @admin.display(description="messages")
    def message_log(self, obj: User) -> str:
        url = reverse("admin:delivery_message_changelist") + f"?user__id__exact={obj.pk}"
        return format_html('<a href="{}">message log</a>', url)


class DeviceForm(forms.ModelForm):
    new_claim_code = forms.CharField(
        label="new claim code",
        required=False,
        help_text="Type one (at least 8 letters or digits) to replace the code; only its hash is kept.",
    )
    generate_claim_code = forms.BooleanField(
        label="generate a new claim code",
        required=False,
        help_text="A new device gets one when no code is typed. The code is shown once, after saving.",
    )

    class Meta:
        model = Device
        fields = ("network", "device_id", "owner", "nickname", "is_active")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.fields["is_active"].initial = False  # a new device goes into the inventory unless given an owner

    def clean_new_claim_code(self) -> str:
        code = self.cleaned_data["new_claim_code"].strip()
        if code and len(normalise_claim_code(code)) < 8:
            raise forms.ValidationError("A claim code has at least 8 letters or digits.")
        return code


class InventoryUploadForm(forms.Form):
    csv_file = forms.FileField(
        label="inventory CSV", help_text="Header: device_id, and optionally claim_code and nickname."
    )


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    form = DeviceForm
    list_display = (
        "device_id",
        "network",
        "nickname",
        "owner",
        "is_active",
        "can_be_claimed",
        "claimed_at",
        "registered_at",
    )
    list_filter = ("network", "is_active", ("owner", admin.EmptyFieldListFilter))
    search_fields = ("device_id", "nickname", "owner__username")
    autocomplete_fields = ("owner",)
    readonly_fields = ("registered_at", "claimed_at")
    actions = ["new_claim_codes"]
    change_list_template = "admin/accounts/device/change_list.html"

    @admin.display(boolean=True, description="claim code set")
    def can_be_claimed(self, obj: Device) -> bool:
        return bool(obj.claim_code)

    def save_model(self, request, obj: Device, form, change: bool) -> None:
        code = form.cleaned_data.get("new_claim_code") or ""
        generated = form.cleaned_data.get("generate_claim_code") or (not change and not code)
        if generated:
            code = generate_claim_code()
        if code:
            obj.set_claim_code(code)
        super().save_model(request, obj, form, change)
        if generated:
            messages.warning(
                request, f"Claim code of device {obj.device_id}: {code} (shown this once; put it on the label)."
            )

    @admin.action(description="Make new claim codes for the selected devices (CSV download)")
    def new_claim_codes(self, request, queryset):
        response = HttpResponse(content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="claim-codes.csv"'
        writer = csv.writer(response, lineterminator="\n")
        writer.writerow(["device_id", "claim_code"])
        for device in queryset:
            code = generate_claim_code()
            device.set_claim_code(code)
            device.save(update_fields=["claim_code"])
            writer.writerow([device.device_id, code])
        return response

    def get_urls(self):
        import_url = path(
            "import/", self.admin_site.admin_view(self.import_inventory_view), name="accounts_device_import"
        )
        return [import_url, *super().get_urls()]

    def import_inventory_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = InventoryUploadForm(request.POST or None, request.FILES or None)
        problems: list[str] = []
        if request.method == "POST" and form.is_valid():
            try:
                text = form.cleaned_data["csv_file"].read().decode("utf-8-sig")
            except UnicodeDecodeError:
                text, problems = "", ["the file is not UTF-8 text"]
            if not problems:
                rows, problems = read_inventory(text)
            if not problems:
                added, skipped = import_inventory(rows)
                generated = [row for row in added if row.generated]
                self.message_user(request, f"Imported {len(added)} devices, skipped {len(skipped)} already known.")
                if generated:
                    response = HttpResponse(content_type="text/csv")
                    response["Content-Disposition"] = 'attachment; filename="claim-codes.csv"'
                    writer = csv.writer(response, lineterminator="\n")
                    writer.writerow(["device_id", "claim_code"])
                    for row in generated:
                        writer.writerow([row.device_id, row.claim_code])
                    return response
                return HttpResponseRedirect(reverse("admin:accounts_device_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import device inventory",
            "form": form,
            "problems": problems,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/accounts/device/import.html", context)


@admin.register(BlockedSender)
class BlockedSenderAdmin(admin.ModelAdmin):
    list_display = ("address", "kind", "user", "created_at")
    list_filter = ("kind",)
    search_fields = ("address", "user__username")
    autocomplete_fields = ("user",)
    readonly_fields = ("kind", "created_at")


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ("name", "address", "kind", "owner", "created_at")
    list_filter = ("kind",)
    search_fields = ("name", "address", "owner__username")
    autocomplete_fields = ("owner",)
    readonly_fields = ("kind", "created_at")
