"""What every request can reach (the app's connections) and who is calling (the API key)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from arq.connections import ArqRedis
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.auth import Principal, authenticate, keys_version
from service.errors import ApiError
from service.settings import Settings
from service.storage import FileStorage, S3Storage


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    storage: FileStorage | S3Storage
    redis: ArqRedis
    reads: async_sessionmaker[AsyncSession]  # single reads (autocommit): status polls, key checks

    def base_url(self, request: Request) -> str:
        return (self.settings.public_base_url or str(request.base_url)).rstrip("/")

    def link(self, request: Request, key: str | None) -> str | None:
        return self.storage.url(key, self.base_url(request)) if key else None


def services(request: Request) -> Services:
    return request.app.state.services


async def session(svc: Annotated[Services, Depends(services)]):
    async with svc.sessions() as s:
        yield s


async def principal(request: Request, svc: Annotated[Services, Depends(services)]) -> Principal:
    """The caller, as the edge already checked it (before the body was read), else checked now."""
    who = getattr(request.state, "principal", None)
    return who if who is not None else await authenticate_header(svc, request.headers.get("authorization", ""))


async def authenticate_header(svc: Services, header: str) -> Principal:
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="avatar"'}
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer KEY'", challenge)
    who = await check_token(svc, token.strip())
    if who is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key", challenge)
    return who


async def check_token(svc: Services, token: str) -> Principal | None:
    """The key's principal (remembered for a few seconds unless a key was revoked since), or None."""
    version = await keys_version(svc.redis)  # read before the check: a revocation after it is seen next time
    async with svc.reads() as s:
        return await authenticate(s, token, version)


async def admin(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.is_admin:
        raise ApiError(403, "forbidden", "this needs an admin key (avatar keys create --tenant NAME --admin)")
    return who


async def operator(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.is_operator:
        raise ApiError(403, "forbidden", "this needs an operator key (on the server: avatar keys create "
                       "--tenant NAME --operator); a tenant's admin key manages only its own tenant")
    return who


SvcDep = Annotated[Services, Depends(services)]
SessionDep = Annotated[AsyncSession, Depends(session)]
PrincipalDep = Annotated[Principal, Depends(principal)]
AdminDep = Annotated[Principal, Depends(admin)]
OperatorDep = Annotated[Principal, Depends(operator)]
