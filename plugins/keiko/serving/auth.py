"""Who may ask a model server for what: the admin token (KEIKO_ADMIN_TOKEN) of /admin/*, and a forced variant.

A request may ask for a variant (the known-answer checks of a canary at any weight) with X-Keiko-Variant (REST)
or x-keiko-variant (gRPC metadata); with an admin token configured, only together with it.
"""

from __future__ import annotations

import hmac

from keiko.serving.split import VARIANTS

VARIANT_HEADER = "x-keiko-variant"


def bearer_token_matches(authorization: str, token: str) -> bool:
    """`Authorization: Bearer <token>`, the scheme in any case (RFC 9110 11.1), the token compared in constant time."""
    scheme, _, credentials = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.lstrip(" ").encode(), token.encode())


def asked_variant(asked: str, authorization: str, token: str) -> str | None:
    """The variant a request asks for, if it may: a known variant, with the admin token when one is set."""
    if asked not in VARIANTS:
        return None
    if token and not bearer_token_matches(authorization, token):
        return None
    return asked
