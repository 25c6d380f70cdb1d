#!/usr/bin/env python3
"""An integrator's OAuth 2.0 client, written with off-the-shelf libraries only.

Herald's tests run it against a live server (issue 15): it discovers the authorization
server from its RFC 8414 metadata, registers two clients through Herald's API with the admin
key, obtains access tokens with authlib (client_secret_basic, and private_key_jwt with an
Ed25519 key it generates itself), validates each token against /oauth/jwks.json with PyJWT
(RFC 9068 rules: typ at+jwt, iss, aud, exp, iat, the required claims), and sends a message
with each token. Nothing here shares code with Herald.

Usage: oauth_oracle.py BASE_URL ADMIN_KEY PHONE
Prints one JSON document with what it did; exits non-zero on any failure.
"""

import json
import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import OKPKey

REQUIRED_CLAIMS = ["iss", "aud", "sub", "client_id", "scope", "jti", "iat", "exp"]


def admin(base, key):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"

    def call(method, path, body=None):
        response = session.request(method, base + path, json=body, timeout=10)
        if response.status_code >= 300:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    return call


def validate(token, metadata):
    """RFC 9068 §4 validation, by PyJWT against the published key set."""
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt":
        raise SystemExit(f"typ is {header.get('typ')!r}, not at+jwt")
    keys = jwt.PyJWKClient(metadata["jwks_uri"])
    signing_key = keys.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        signing_key.key,
        algorithms=["EdDSA", "ES256"],
        issuer=metadata["issuer"],
        audience=metadata["issuer"],
        options={"require": REQUIRED_CLAIMS},
    )


def send(base, session, phone):
    body = {
        "to": phone,
        "purpose": "demo",
        "template": {"name": "demo_update", "language": "en", "parameters": ["oracle"]},
    }
    response = session.post(base + "/v1/messages", json=body, timeout=10)
    if response.status_code != 202:
        raise SystemExit(f"send: {response.status_code} {response.text}")
    return response.json()["id"]


def main():
    base, admin_key, phone = sys.argv[1], sys.argv[2], sys.argv[3]
    metadata = requests.get(base + "/.well-known/oauth-authorization-server", timeout=10).json()
    for field in ["issuer", "token_endpoint", "jwks_uri", "response_types_supported"]:
        if field not in metadata:
            raise SystemExit(f"metadata lacks {field}")
    token_endpoint = metadata["token_endpoint"]
    call = admin(base, admin_key)
    integration = call("POST", "/v1/integrations", {"name": "python-oracle"})
    scopes = ["messages:send", "subjects:write"]
    result = {"integration_id": integration["id"], "messages": [], "claims": []}

    # client_secret_basic, as authlib does it by default.
    created = call(
        "POST",
        f"/v1/integrations/{integration['id']}/oauth-clients",
        {"name": "py-secret", "scopes": scopes},
    )
    session = OAuth2Session(created["client_id"], created["client_secret"], scope=" ".join(scopes))
    token = session.fetch_token(token_endpoint, grant_type="client_credentials")
    if token.get("token_type", "").lower() != "bearer":
        raise SystemExit(f"token_type {token.get('token_type')!r}")
    claims = validate(token["access_token"], metadata)
    if claims["client_id"] != created["client_id"]:
        raise SystemExit("client_id claim is not the client")
    result["claims"].append(claims)
    result["messages"].append(send(base, session, phone))

    # private_key_jwt with an Ed25519 key that never leaves this process.
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key = OKPKey.import_key(pem)
    public_jwk = {k: v for k, v in key.as_dict(private=False).items() if k in ("kty", "crv", "x")}
    signer = call(
        "POST",
        f"/v1/integrations/{integration['id']}/oauth-clients",
        {
            "name": "py-signer",
            "scopes": scopes,
            "token_endpoint_auth_method": "private_key_jwt",
            "jwk": public_jwk,
        },
    )
    if "client_secret" in signer:
        raise SystemExit("a private_key_jwt client was given a secret")
    session = OAuth2Session(
        signer["client_id"],
        key,
        token_endpoint_auth_method=PrivateKeyJWT(token_endpoint, alg="EdDSA"),
        scope=" ".join(scopes),
    )
    token = session.fetch_token(token_endpoint, grant_type="client_credentials")
    claims = validate(token["access_token"], metadata)
    if claims["client_id"] != signer["client_id"]:
        raise SystemExit("client_id claim is not the signer")
    result["claims"].append(claims)
    result["messages"].append(send(base, session, phone))

    # A token altered by one character must fail PyJWT's check too.
    forged = token["access_token"][:-2] + ("AA" if not token["access_token"].endswith("AA") else "BB")
    try:
        validate(forged, metadata)
    except jwt.PyJWTError:
        result["forged_refused"] = True
    else:
        raise SystemExit("PyJWT accepted a forged token")

    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
