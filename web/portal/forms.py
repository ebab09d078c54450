"""The portal's forms. Field labels and error texts are what the person reads."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import AuthenticationForm, BaseUserCreationForm, PasswordResetForm
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from web.accounts.devices import parse_device_id
from web.accounts.models import BlockedSender, Contact, RetiredMailbox, User, contact_name_problem

from .rules import mailbox_name_problem


class SignUpForm(BaseUserCreationForm):
    """Mailbox name, personal email, password twice (Django's password validators)."""

    contact_email = forms.EmailField(
        label="Your personal email",
        help_text="We send a link to confirm it; password resets go here.",
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )

    class Meta:
        model = User
        fields = ("username", "contact_email")
        labels = {"username": "Mailbox name"}
        help_texts = {"username": "Your address will be <name>@the service's domain. Lower-case letters, digits, . _ -"}

    def __init__(self, *args, domain: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        if domain:
            self.fields["username"].help_text = f"Your address will be name@{domain}. Lower-case letters, digits, . _ -"
        self.fields["username"].widget.attrs.update({"autocomplete": "username", "autocapitalize": "none"})

    def clean_username(self) -> str:
        name = (self.cleaned_data.get("username") or "").strip().lower()
        problem = mailbox_name_problem(name)
        if problem:
            raise forms.ValidationError(problem)
        if User.objects.filter(username__iexact=name).exists() or RetiredMailbox.is_retired(name):
            raise forms.ValidationError(f"'{name}' is taken; choose another name.")
        return name

    def clean_contact_email(self) -> str:
        return self.cleaned_data["contact_email"].strip().lower()

    def _post_clean(self) -> None:
        # The model's username validator repeats clean_username's checks with a vaguer text: keep ours only.
        super()._post_clean()
        if "username" in self.errors and len(self.errors["username"]) > 1:
            self.errors["username"] = self.errors["username"][:1]


class LoginForm(AuthenticationForm):
    """Mailbox names are lower case: "Walker" typed on a phone (capitalised by its keyboard) logs in as "walker"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["username"].label = "Mailbox name"
        self.fields["username"].widget.attrs.update({"autocapitalize": "none", "autocorrect": "off"})

    def clean(self):
        self.cleaned_data["username"] = (self.cleaned_data.get("username") or "").strip().lower()
        return super().clean()


class PortalPasswordResetForm(PasswordResetForm):
    """Reset links go only to a verified personal email address."""

    email = forms.EmailField(
        label="Your personal email", max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )

    def get_users(self, email):
        users = User.objects.filter(contact_email__iexact=email, contact_email_verified=True, is_active=True)
        return (u for u in users if u.has_usable_password())

    def send_mail(self, subject_template_name, email_template_name, context, from_email, to_email, **kwargs):
        user = context["user"]
        super().send_mail(subject_template_name, email_template_name, context, from_email, user.contact_email, **kwargs)


class ClaimForm(forms.Form):
    device_id = forms.CharField(
        label="Device id",
        max_length=20,
        help_text="The number on the device's label: a Swarm device id, or a RockBLOCK's 15-digit IMEI.",
        widget=forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "off"}),
    )
    claim_code = forms.CharField(
        label="Claim code",
        max_length=40,
        help_text="The code printed next to it, e.g. ABCD-EFGH-JKMN.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "characters"}),
    )

    def __init__(self, *args, replacing=None, **kwargs):
        super().__init__(*args, **kwargs)
        if replacing is not None:
            self.fields["confirm_replace"] = forms.BooleanField(
                label=f"Replace device {replacing.device_id}: it stops receiving my messages",
                error_messages={"required": "Tick this to confirm the replacement."},
            )

    def clean_device_id(self) -> int:
        value = parse_device_id(self.cleaned_data["device_id"])
        if value is None:
            raise forms.ValidationError("A device id is a number, as printed on the label.")
        return value


class BlockForm(forms.Form):
    address = forms.CharField(
        label="Email address or phone number",
        max_length=254,
        help_text="Phone numbers with the country code, e.g. +1 415 555 0100.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_address(self) -> str:
        raw = self.cleaned_data["address"].strip()
        if "@" in raw:
            try:
                validate_email(raw)
            except ValidationError:
                raise forms.ValidationError("That is not a valid email address.") from None
        try:
            _, address = BlockedSender.normalise(raw)
        except ValidationError:
            raise forms.ValidationError(
                "Neither an email address nor a phone number (give phone numbers with +country code)."
            ) from None
        if self.user is not None and self.user.blocked_senders.filter(address=address).exists():
            raise forms.ValidationError(f"{address} is already blocked.")
        return address


class DeleteAccountForm(forms.Form):
    password = forms.CharField(
        label="Your password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )
    confirm = forms.BooleanField(
        label="Delete my account: my messages are anonymised, my device is released, my mailbox name is retired",
        error_messages={"required": "Tick this to confirm."},
    )

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("That is not your password.")
        return password


class ChangeEmailForm(forms.Form):
    contact_email = forms.EmailField(
        label="New personal email", widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )
    password = forms.CharField(
        label="Your password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_contact_email(self) -> str:
        return self.cleaned_data["contact_email"].strip().lower()

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("That is not your password.")
        return password


class ContactForm(forms.Form):
    name = forms.CharField(
        label="Short name",
        max_length=40,
        help_text="What your device writes instead of the address, e.g. mom. Lower-case letters, digits, - and _.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "none"}),
    )
    address = forms.CharField(
        label="Email address or phone number",
        max_length=254,
        help_text="Phone numbers with the country code, e.g. +1 415 555 0100. A number gets a text, an address mail.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip().lower()
        problem = contact_name_problem(name)
        if problem:
            raise forms.ValidationError(problem)
        if self.user is not None and self.user.contacts.filter(name=name).exists():
            raise forms.ValidationError(f"You already have a contact called '{name}'.")
        return name

    def clean_address(self) -> str:
        try:
            _, address = Contact.normalise(self.cleaned_data["address"])
        except ValidationError as exc:
            raise forms.ValidationError(exc.message_dict["address"][0]) from None
        return address


class ContactsOnlyForm(forms.Form):
    contacts_only = forms.BooleanField(
        label="Contacts only: only my contacts and my own confirmed email can reach my device",
        required=False,
    )
