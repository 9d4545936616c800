"""Dependency aliases: the container, and the token check when one is configured."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from openanomaly.api.auth import bearer, check_bearer
from openanomaly.bootstrap import Container
from openanomaly.services.service import Service


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def get_service(container: Annotated[Container, Depends(get_container)]) -> Service:
    return container.service


def require_token(
    container: Annotated[Container, Depends(get_container)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    check_bearer(creds, container.settings.api.token)


ContainerDep = Annotated[Container, Depends(get_container)]
ServiceDep = Annotated[Service, Depends(get_service)]
Authorized = Depends(require_token)
