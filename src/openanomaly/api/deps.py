"""Dependency aliases: the container, and the token check when one is configured."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from openanomaly.bootstrap import Container
from openanomaly.service import Service

_bearer = HTTPBearer(auto_error=False)


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def get_service(container: Annotated[Container, Depends(get_container)]) -> Service:
    return container.service


def require_token(
    container: Annotated[Container, Depends(get_container)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    token = container.settings.api.token
    if token is None:
        return
    given = creds.credentials if creds is not None else ""
    if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


ContainerDep = Annotated[Container, Depends(get_container)]
ServiceDep = Annotated[Service, Depends(get_service)]
Authorized = Depends(require_token)
