"""The local issuer's private keys are stored encrypted under TEAMS_SIGNING_KEY_PASSPHRASE, which
prod requires; a key stored before the passphrase was set stays usable."""

from __future__ import annotations

import json

import jwt
import pytest
from jwt.algorithms import ECAlgorithm

from teams.settings import TeamsSettings, signing_key_passphrase
from teams.use_cases import new_signing_key, private_key

PASSPHRASE = b"mot-cum-tu-bi-mat-du-dai"


def test_a_key_is_stored_encrypted_and_signs_once_decrypted() -> None:
    key = new_signing_key(passphrase=PASSPHRASE)
    assert key.private_key_pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    token = jwt.encode({"sub": "x"}, private_key(key.private_key_pem, PASSPHRASE), "ES256")  # type: ignore[arg-type]
    public = ECAlgorithm.from_jwk(json.dumps(json.loads(key.public_jwk)))
    assert jwt.decode(token, public, algorithms=["ES256"])["sub"] == "x"  # type: ignore[arg-type]


@pytest.mark.parametrize("passphrase", [None, b"not-the-one-it-was-stored-with"])
def test_an_encrypted_key_without_its_passphrase_is_a_clear_error(passphrase: bytes | None) -> None:
    key = new_signing_key(passphrase=PASSPHRASE)
    with pytest.raises(RuntimeError, match="TEAMS_SIGNING_KEY_PASSPHRASE"):
        private_key(key.private_key_pem, passphrase)


def test_a_key_stored_before_the_passphrase_was_set_still_signs() -> None:
    key = new_signing_key(passphrase=None)
    assert key.private_key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert private_key(key.private_key_pem, PASSPHRASE) is not None


def test_prod_requires_a_passphrase_of_some_length() -> None:
    with pytest.raises(ValueError, match="required in prod"):
        signing_key_passphrase(TeamsSettings(CDT_ENV="prod"))
    with pytest.raises(ValueError, match="at least 16"):
        signing_key_passphrase(TeamsSettings(TEAMS_SIGNING_KEY_PASSPHRASE="short"))
    assert signing_key_passphrase(TeamsSettings(CDT_ENV="dev")) is None
    configured = TeamsSettings(CDT_ENV="prod", TEAMS_SIGNING_KEY_PASSPHRASE=PASSPHRASE.decode())
    assert signing_key_passphrase(configured) == PASSPHRASE
