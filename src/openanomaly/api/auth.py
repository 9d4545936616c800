"""Bearer-token checks shared by the management API and the model server."""

from __future__ import annotations

import secrets

from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

bearer = HTTPBearer(auto_error=False)


def check_bearer(creds: HTTPAuthorizationCredentials | None, token: SecretStr | None) -> None:
    """Raise 401 unless ``creds`` carry ``token`` (nothing is required without a token).

    The comparison takes constant time, so a wrong token's timing tells nothing.
    """
    if token is None:
        return
    given = creds.credentials if creds is not None else ""
    if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
