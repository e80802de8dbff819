"""Erase keys (``contact.erased`` ``identity_keys``) are keyed HMACs under the installation's
secret: not enumerable from the tenant id and a guessed phone, the same in every process of one
installation, different between installations."""

from __future__ import annotations

import hashlib

from cryptography.fernet import Fernet

from shared.crypto import SecretBox, load_or_create_key
from shared.normalize import IDENTITY_KEY_PURPOSE, identity_digest

PHONE = "+79165550142"


def test_a_guessed_phone_and_the_tenant_id_do_not_give_the_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    box = SecretBox(load_or_create_key(None, tmp_path))
    digest = identity_digest("ten1", PHONE, box.derive(IDENTITY_KEY_PURPOSE))
    for guess in (f"ten1\n{PHONE}", f"ten1{PHONE}", PHONE):
        assert digest != hashlib.sha256(guess.encode()).hexdigest()


def test_every_process_of_one_installation_derives_the_same_key_and_others_do_not(tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = SecretBox(load_or_create_key(None, tmp_path))  # generated under CRM_DATA_DIR
    second = SecretBox(load_or_create_key(None, tmp_path))  # another process, same data dir
    configured = Fernet.generate_key().decode()
    a = SecretBox(load_or_create_key(configured, tmp_path / "a"))  # CRM_SECRET_KEY everywhere
    b = SecretBox(load_or_create_key(configured, tmp_path / "b"))
    other = SecretBox(Fernet.generate_key())

    def key(box: SecretBox) -> str:
        return identity_digest("ten1", PHONE, box.derive(IDENTITY_KEY_PURPOSE))

    assert key(first) == key(second)
    assert key(a) == key(b)
    assert len({key(first), key(a), key(other)}) == 3
    assert identity_digest("ten2", PHONE, first.derive(IDENTITY_KEY_PURPOSE)) != key(first)
