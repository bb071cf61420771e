"""A sign-up service on FastAPI: each sign-up and its welcome mail commit together.

``POST /signups`` inserts the user and pushes ``send-welcome`` in one transaction of the app's
own pool; the workers run in the same process (``lifespan``) and drain on SIGTERM. pgqueue's
REST API and dashboard are at ``/pgqueue/``, with the tokens of ``pgqueue serve``
(``PGQUEUE_API_TOKEN``, ``PGQUEUE_READ_TOKEN``). ``main.py`` builds the app from the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from pgqueue import AsyncQueue, Envelope, KindOptions
from pgqueue.adapters.fastapi import QueueDependency, lifespan, mount
from pgqueue.http import HttpSettings
from pgqueue.store.queries import validate_schema_name


class Profile(BaseModel):
    """What the welcome mail needs to know about the new user."""

    name: str
    email: str
    newsletter: bool = False


class SignupIn(Profile):
    invited_by: int | None = None


class SignupOut(BaseModel):
    id: int
    welcome_task: int | None


def app_tables(schema: str) -> str:
    return f"""
    CREATE TABLE IF NOT EXISTS {schema}.signups (
        id              bigserial PRIMARY KEY,
        name            text NOT NULL,
        email           text NOT NULL UNIQUE,
        welcomed_at     timestamptz,
        welcome_attempt int
    );
    CREATE TABLE IF NOT EXISTS {schema}.invitations (
        inviter_id bigint NOT NULL REFERENCES {schema}.signups (id),
        invitee_id bigint NOT NULL REFERENCES {schema}.signups (id)
    )
    """


def build_app(
    dsn: str,
    *,
    schema: str = "pgqueue",
    app_schema: str = "public",
    settings: HttpSettings | None = None,
    mail_seconds: float = 0.0,
) -> tuple[FastAPI, AsyncQueue]:
    """The app and its queue (module-level ``app`` reads them from the environment)."""
    validate_schema_name(app_schema)
    queue = AsyncQueue(dsn, schema=schema)
    pool = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)

    @queue.task("send-welcome", KindOptions(attempt_timeout=30, max_attempts=5, worker_count=4))
    async def send_welcome(envelope: Envelope, user_id: int, profile: Profile) -> None:
        """Send the welcome mail (pretend), then note it on the user's row."""
        await asyncio.sleep(mail_seconds)  # the mail server's round trip
        async with pool.connection() as conn:
            await conn.execute(
                f"UPDATE {app_schema}.signups SET welcomed_at = now(), welcome_attempt = %s"
                " WHERE id = %s",
                (envelope.attempt, user_id),
            )

    queue_lifespan = lifespan(queue)

    @contextlib.asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        await pool.open()
        try:
            async with pool.connection() as conn:
                await conn.execute(app_tables(app_schema))
            async with queue_lifespan(app):
                yield
        finally:
            await pool.close()

    app = FastAPI(title="sign-ups", lifespan=run)
    mount(app, queue, "/pgqueue", settings)

    @app.post("/signups", status_code=201)
    async def sign_up(body: SignupIn, queue: QueueDependency) -> SignupOut:
        """Create the user and push its welcome mail: both exist, or neither does."""
        profile = Profile(name=body.name, email=body.email, newsletter=body.newsletter)
        try:
            async with pool.connection() as conn, conn.transaction():
                cursor = await conn.execute(
                    f"INSERT INTO {app_schema}.signups (name, email) VALUES (%s, %s) RETURNING id",
                    (body.name, body.email),
                )
                row = await cursor.fetchone()
                assert row is not None
                user_id = int(row[0])
                task_id = await send_welcome.configure(key=f"welcome:{user_id}").push_tx(
                    conn, user_id, profile
                )
                if body.invited_by is not None:  # an unknown inviter rolls everything back
                    await conn.execute(
                        f"INSERT INTO {app_schema}.invitations VALUES (%s, %s)",
                        (body.invited_by, user_id),
                    )
        except psycopg.errors.UniqueViolation:
            raise HTTPException(409, "this e-mail address has signed up already") from None
        except psycopg.errors.ForeignKeyViolation:
            raise HTTPException(404, f"no user {body.invited_by} to be invited by") from None
        return SignupOut(id=user_id, welcome_task=task_id)

    @app.get("/healthz")
    async def healthz(queue: QueueDependency) -> dict[str, Any]:
        return {"ok": True, "queue": queue.state.value}

    return app, queue
