"""Password policy after NIST SP 800-63B rev. 4: length, not composition; blocklists."""

from __future__ import annotations

import pytest
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import password_validators_help_texts
from django.contrib.auth.password_validation import validate_password as django_validate
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import translation
from fleetroom.accounts import policy
from fleetroom.accounts.models import User
from fleetroom.accounts.testing import PASSWORD, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def alice():
    return make_user("alice", email="alice.smith@acme-printing.example",
                     first_name="Alice", last_name="Smith")


def codes(password, user=None) -> set[str]:
    try:
        django_validate(password, user)
    except ValidationError as exc:
        return {e.code for e in exc.error_list}
    return set()


@pytest.mark.parametrize(("password", "expected"), [
    ("fourteen chars", {"password_too_short"}),                    # 14
    ("fifteen chars!!", set()),                                     # 15, punctuation is fine
    ("only lower case letters here", set()),                        # no composition rules
    ("x" * 15 + "y" * 50, set()),                                   # 65 characters
    ("a sentence " * 10, set()),                                    # 110 characters
    ("ä" * 15, set()),                                              # Unicode counts per character
    ("z" * 1025, {"password_too_long"}),
    ("1q2w3e4r5t6y7u8i9o0p", {"password_too_common"}),
])
def test_length_not_composition(password, expected, alice):
    assert codes(password, alice) == expected


@pytest.mark.parametrize("password", [
    "my alice password 2024",          # username
    "smith family holidays",           # e-mail local part and last name
    "acme-printing rocks hard",        # e-mail domain
    "welcome to fleetroom!!",          # the service
    "W3lcome to Fl33tr00m 2025",       # ... in disguise
])
def test_context_words_are_refused(password, alice):
    assert "password_context_word" in codes(password, alice)


def test_company_name_from_a_hook(alice):
    def company(user):
        return ["Druckerei Zeilinger GmbH"] if user.pk == alice.pk else []

    policy.register_context_word_provider(company)
    try:
        assert "password_context_word" in codes("zeilinger forever and ever", alice)
        assert codes("zeilinger forever and ever", make_user("bob")) == set()
    finally:
        policy.CONTEXT_WORD_PROVIDERS.remove(company)


def test_short_words_do_not_block_honest_passphrases():
    jo = make_user("jo", email="jo@ex.example")
    assert codes("enjoy the journey home", jo) == set()


def test_help_texts_describe_the_policy():
    texts = " ".join(password_validators_help_texts())
    assert "15" in texts
    assert "1024" in texts
    assert "username" in texts


def test_messages_are_translatable():
    with translation.override("de"), pytest.raises(ValidationError) as exc:
        django_validate("kurz")
    assert "zu kurz" in " ".join(exc.value.messages)  # "Dieses Passwort ist zu kurz. ..."
    with pytest.raises(ValidationError) as exc:
        django_validate("fleetroom is the best place")
    assert exc.value.error_list[0].code == "password_context_word"


def test_password_change_form_applies_the_policy():
    user = make_user("alice")
    client = Client()
    client.force_login(user)
    url = reverse("account_change_password")
    response = client.post(url, {"oldpassword": PASSWORD, "password1": "too short",
                                 "password2": "too short"})
    assert response.status_code == 200
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    new = "an entirely new long passphrase"
    response = client.post(url, {"oldpassword": PASSWORD, "password1": new, "password2": new})
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password(new)


def test_production_hashing_is_argon2id():
    from fleetroom import settings as production

    assert production.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"
    with override_settings(PASSWORD_HASHERS=production.PASSWORD_HASHERS):
        encoded = make_password(PASSWORD)
        assert encoded.startswith("argon2$argon2id$")
        user = User(username="x", password=encoded)
        assert user.check_password(PASSWORD)


def test_an_admin_cannot_give_an_sso_account_a_local_password():
    from django.core.exceptions import ValidationError
    from fleetroom.accounts.models import ExternalIdentity
    from fleetroom.accounts.services import do_set_password

    user = make_user("ldapuser")
    user.set_unusable_password()
    user.save()
    ExternalIdentity.objects.create(kind=ExternalIdentity.Kind.LDAP, provider="ldap",
                                    subject="5f1c4f9e-0000-4000-8000-000000000001", user=user)
    with pytest.raises(ValidationError) as exc:
        do_set_password(user, "another long enough passphrase", acting_user=None)
    assert exc.value.code == "sso_account"
    user.refresh_from_db()
    assert not user.has_usable_password()
