from messaging.core.redact import mask_address, mask_email, mask_key, mask_phone


def test_email_keeps_first_letter_and_domain():
    assert mask_email("alice.smith@example.org") == "a***@example.org"
    assert "alice" not in mask_email("alice@example.org")


def test_phone_keeps_country_and_last_four():
    assert mask_phone("+14155550100") == "+1******0100"
    assert "415555" not in mask_phone("+14155550100")
    assert mask_phone("12") == "***"


def test_address_dispatch():
    assert mask_address("device:1234") == "device:1234"
    assert mask_address("bob@x.org") == "b***@x.org"
    assert mask_address("+447700900123").endswith("0123")


def test_key_masks_the_mailbox_only():
    assert mask_key("smtp:<abc@mail>:demo@beaver.test") == "smtp:<abc@mail>:d***@beaver.test"
    assert mask_key("twilio:SM123") == "twilio:SM123"
