"""Contacts: add (short name validated, address normalised), remove, contacts-only mode; nobody sees or touches
another person's contacts."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from web.accounts.models import Contact

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "name,typed,stored,kind",
    [
        ("mom", "Mom@Family.Example.ORG", "Mom@family.example.org", "email"),
        ("Dad_Cell", "+1 (415) 555-0199", "+14155550199", "phone"),
        ("camp-2", "  +44 7700 900123 ", "+447700900123", "phone"),
    ],
)
def test_add_a_contact_name_lower_cased_address_normalised(client, person, name, typed, stored, kind):
    user = person()
    client.force_login(user)
    page = client.post(reverse("portal:contacts"), {"name": name, "address": typed})
    assert page.status_code == 302
    contact = user.contacts.get()
    assert (contact.name, contact.address, contact.kind) == (name.lower(), stored, kind)
    html = client.get(reverse("portal:contacts")).content.decode()
    assert name.lower() in html and stored in html


@pytest.mark.parametrize(
    "name",
    ["", "mom@home", "4155550199", "+14155550199", "12-34", "with space", "dot.name", "a" * 21, "émile"],
)
def test_a_name_that_could_be_an_address_or_is_malformed_is_refused(client, person, name):
    user = person()
    client.force_login(user)
    page = client.post(reverse("portal:contacts"), {"name": name, "address": "mom@family.example.org"})
    assert page.status_code == 200 and 'class="error"' in page.content.decode()
    assert not user.contacts.exists()


@pytest.mark.parametrize("typed", ["not an address", "4155550199", "a@", "@b.org", "mom@localhost", ""])
def test_an_address_that_is_neither_is_refused(client, person, typed):
    user = person()
    client.force_login(user)
    page = client.post(reverse("portal:contacts"), {"name": "mom", "address": typed})
    assert page.status_code == 200 and 'class="error"' in page.content.decode()
    assert not user.contacts.exists()


def test_a_name_is_unique_per_person_only(client, person):
    me, other = person(), person()
    Contact.objects.create(owner=other, name="mom", address="their-mom@example.org")
    client.force_login(me)
    assert client.post(reverse("portal:contacts"), {"name": "mom", "address": "a@example.org"}).status_code == 302
    page = client.post(reverse("portal:contacts"), {"name": "MOM", "address": "b@example.org"})
    assert "already have a contact called" in page.content.decode()
    assert me.contacts.count() == 1


def test_the_model_checks_the_name_too():
    with pytest.raises(ValidationError):
        Contact(name="4155550199", address="a@example.org").full_clean(exclude=["owner"])
    with pytest.raises(ValidationError):
        Contact(name="x@y", address="a@example.org").full_clean(exclude=["owner"])


def test_remove_a_contact(client, person):
    user = person()
    client.force_login(user)
    client.post(reverse("portal:contacts"), {"name": "mom", "address": "mom@example.org"})
    contact = user.contacts.get()
    assert client.get(reverse("portal:remove_contact", args=[contact.pk])).status_code == 405, "POST only"
    assert client.post(reverse("portal:remove_contact", args=[contact.pk])).status_code == 302
    assert not user.contacts.exists()


def test_contacts_only_is_off_by_default_and_switched_on_the_page(client, person):
    user = person()
    assert not user.contacts_only
    client.force_login(user)
    assert client.post(reverse("portal:contacts_only"), {"contacts_only": "on"}).status_code == 302
    user.refresh_from_db()
    assert user.contacts_only
    assert 'name="contacts_only" checked' in client.get(reverse("portal:contacts")).content.decode().replace(
        ' id="id_contacts_only"', ""
    )
    client.post(reverse("portal:contacts_only"), {})
    user.refresh_from_db()
    assert not user.contacts_only
    assert client.get(reverse("portal:contacts_only")).status_code == 405, "POST only"


def test_nobody_sees_or_removes_another_persons_contacts(client, person):
    me, other = person(), person()
    theirs = Contact.objects.create(owner=other, name="secretmom", address="secret-mom@example.org")
    client.force_login(me)
    html = client.get(reverse("portal:contacts")).content.decode()
    assert "secretmom" not in html and "secret-mom" not in html
    assert client.post(reverse("portal:remove_contact", args=[theirs.pk])).status_code == 404
    assert Contact.objects.filter(pk=theirs.pk).exists()


def test_contacts_need_a_login(client):
    assert client.get(reverse("portal:contacts")).status_code == 302
    assert client.post(reverse("portal:remove_contact", args=[1])).status_code == 302
    assert client.post(reverse("portal:contacts_only"), {"contacts_only": "on"}).status_code == 302


def test_my_data_lists_my_contacts_and_the_mode(client, person):
    user = person(contacts_only=True)
    Contact.objects.create(owner=user, name="mom", address="mom@example.org")
    client.force_login(user)
    data = client.get(reverse("portal:export")).json()
    assert data["account"]["contacts_only"] is True
    assert [(c["name"], c["address"], c["kind"]) for c in data["contacts"]] == [("mom", "mom@example.org", "email")]


def test_an_unknown_name_reads_as_such_in_the_history():
    from web.portal.words import reason_words

    assert reason_words("bad_destination: not sent, no contact or address 'xyz'") == (
        "Not sent, no contact or address 'xyz'."
    )
    assert reason_words("bad_destination") == "The address or phone number the device wrote could not be used."


def test_staff_manage_contacts_and_the_mode_in_the_admin(client, person):
    from web.accounts.models import User

    staff = User.objects.create_superuser(username="ops", password="a-long-pass-phrase", email="ops@example.org")
    client.force_login(staff)
    owner = person()
    page = client.post(
        reverse("admin:accounts_contact_add"), {"owner": owner.pk, "name": "Mom", "address": "+1 415 555 0142"}
    )
    assert page.status_code == 302, page.content[:2000]
    assert [(c.name, c.address, c.kind) for c in owner.contacts.all()] == [("mom", "+14155550142", "phone")]
    form = client.get(reverse("admin:accounts_user_change", args=[owner.pk])).content.decode()
    assert 'name="contacts_only"' in form and "+14155550142" in form, "the mode and the contacts on the user's page"
