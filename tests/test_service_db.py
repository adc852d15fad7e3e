"""The job state machine and the fit passport, on a real PostgreSQL and on SQLite."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from service import auth, credits, jobs, migrate
from service.db import ApiKey, Avatar, Job, make_engine, new_id, session_factory, utcnow


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'avatar.db'}"
    pg = request.getfixturevalue("postgres")
    name = f"t{new_id()[:12]}"
    _admin(pg.sqlalchemy_url, f"CREATE DATABASE {name}")
    return pg.sqlalchemy_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def db_url(empty_db_url):
    migrate.upgrade(empty_db_url)
    return empty_db_url


def _admin(url: str, sql: str) -> None:
    async def go():
        from sqlalchemy import text

        engine = make_engine(url)
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(sql))
        await engine.dispose()
    asyncio.run(go())


def run(url, fn):
    """Run ``fn(sessions)`` on a fresh engine for ``url``."""
    async def go():
        engine = make_engine(url)
        try:
            return await fn(session_factory(engine))
        finally:
            await engine.dispose()
    return asyncio.run(go())


async def _new_job(sessions, user="u1", tenant="acme", created=None) -> str:
    async with sessions() as s:
        job = Job(id=new_id(), tenant=tenant, user_id=user, status=jobs.QUEUED, progress=0, message="",
                  height_cm=170, gender="female", files={}, measurements={}, timings={}, attempts=0,
                  created_at=created or utcnow())
        s.add(job)
        await jobs.register_new(s, job)
        await s.commit()
        return job.id


def test_migrations_reach_head(db_url):
    assert asyncio.run(migrate.current_revision(db_url)) == migrate.head_revision()


def test_a_0005_database_upgrades_and_its_completed_jobs_have_no_fit(empty_db_url):
    from alembic import command

    command.upgrade(migrate.alembic_config(empty_db_url), "0005_clothing")
    _admin(empty_db_url, "INSERT INTO jobs (id, tenant, user_id, status, progress, message, height_cm, weight_kg, "
                         "gender, clothing, files, measurements, timings, attempts, retries, created_at, updated_at) "
                         "VALUES ('j0005', 'acme', 'u1', 'completed', 100, 'avatar ready', 178, 80, 'male', "
                         "'fitted', '{}', '{\"chest\": 99.5}', '{}', 1, 0, '2026-01-01 00:00:00+00:00', "
                         "'2026-01-01 00:00:00+00:00')")
    migrate.upgrade(empty_db_url)
    assert asyncio.run(migrate.current_revision(empty_db_url)) == migrate.head_revision() == "0007_weight_source"

    async def fn(sessions):
        async with sessions() as s:
            old = await s.get(Job, "j0005")
            kept = (old.fit, old.measurements, old.clothing)
            old.fit = {"mass_kg": 79.8, "weight_kg_typed": 80.0}
            await s.commit()
        async with sessions() as s:
            return kept, (await s.get(Job, "j0005")).fit
    kept, fit = run(empty_db_url, fn)
    assert kept == (None, {"chest": 99.5}, "fitted")
    assert fit == {"mass_kg": 79.8, "weight_kg_typed": 80.0}


def test_a_0006_database_upgrades_and_its_jobs_were_fitted_with_a_reported_weight(empty_db_url):
    from alembic import command

    command.upgrade(migrate.alembic_config(empty_db_url), "0006_fit")
    _admin(empty_db_url, "INSERT INTO jobs (id, tenant, user_id, status, progress, message, height_cm, weight_kg, "
                         "gender, clothing, files, measurements, timings, fit, attempts, retries, created_at, "
                         "updated_at) VALUES ('j0006', 'acme', 'u1', 'completed', 100, 'avatar ready', 178, 80, "
                         "'male', 'fitted', '{}', '{\"chest\": 99.5}', '{}', '{\"mass_kg\": 79.8}', 1, 0, "
                         "'2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00')")
    migrate.upgrade(empty_db_url)
    assert asyncio.run(migrate.current_revision(empty_db_url)) == migrate.head_revision() == "0007_weight_source"

    async def fn(sessions):
        async with sessions() as s:
            old = await s.get(Job, "j0006")
            kept = (old.weight_source, old.clothing, old.fit, old.measurements)
        jid = await _new_job(sessions)
        async with sessions() as s:
            new = await s.get(Job, jid)
            default = new.weight_source
            new.weight_source = "scale"
            await s.commit()
        async with sessions() as s:
            return kept, default, (await s.get(Job, jid)).weight_source
    kept, default, stored = run(empty_db_url, fn)
    assert kept == ("reported", "fitted", {"mass_kg": 79.8}, {"chest": 99.5})
    assert default == "reported" and stored == "scale"


def test_the_weight_source_column_goes_away_on_downgrade(empty_db_url):
    from alembic import command

    migrate.upgrade(empty_db_url)
    command.downgrade(migrate.alembic_config(empty_db_url), "0006_fit")
    assert asyncio.run(migrate.current_revision(empty_db_url)) == "0006_fit"
    _admin(empty_db_url, "INSERT INTO jobs (id, tenant, user_id, status, progress, message, height_cm, gender, "
                         "files, measurements, timings, attempts, retries, created_at, updated_at) VALUES ('jd', "
                         "'acme', 'u1', 'queued', 0, '', 170, 'female', '{}', '{}', '{}', 0, 0, "
                         "'2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00')")
    with pytest.raises(Exception, match="weight_source"):
        _admin(empty_db_url, "SELECT weight_source FROM jobs")
    migrate.upgrade(empty_db_url)  # and back up: the row reads as reported
    assert run(empty_db_url, lambda sessions: _weight_source(sessions, "jd")) == "reported"


async def _weight_source(sessions, job_id: str) -> str:
    async with sessions() as s:
        return (await s.get(Job, job_id)).weight_source


def test_a_job_walks_queued_processing_completed(db_url):
    async def fn(sessions):
        jid = await _new_job(sessions)
        async with sessions() as s:
            assert await jobs.move(s, jid, jobs.PROCESSING, started_at=utcnow())
            assert await jobs.report_progress(s, jid, 40, "fit", "fitting")
            assert await jobs.move(s, jid, jobs.COMPLETED, measurements={"chest": 99.5},
                                   files={"avatar_textured.glb": "k/a.glb"})
        async with sessions() as s:
            job = await s.get(Job, jid)
            return job.status, job.progress, job.completed_at is not None
    assert run(db_url, fn) == ("completed", 100, True)


@pytest.mark.parametrize("final", [jobs.COMPLETED, jobs.FAILED, jobs.CANCELLED])
def test_final_states_are_final(db_url, final):
    async def fn(sessions):
        jid = await _new_job(sessions)
        async with sessions() as s:
            await jobs.move(s, jid, jobs.PROCESSING)
            assert await jobs.move(s, jid, final)
            moved = [await jobs.move(s, jid, t) for t in jobs.STATUSES]
            progressed = await jobs.report_progress(s, jid, 50, "fit", "late")
        async with sessions() as s:
            return moved, progressed, (await s.get(Job, jid)).status
    moved, progressed, status = run(db_url, fn)
    assert moved == [False] * len(jobs.STATUSES) and not progressed and status == final


def test_a_queued_job_cannot_jump_to_completed(db_url):
    async def fn(sessions):
        jid = await _new_job(sessions)
        async with sessions() as s:
            return await jobs.move(s, jid, jobs.COMPLETED), (await s.get(Job, jid)).status
    assert run(db_url, fn) == (False, "queued")


def test_cancel_and_complete_race_has_one_winner(db_url):
    async def fn(sessions):
        jid = await _new_job(sessions)
        async with sessions() as s:
            await jobs.move(s, jid, jobs.PROCESSING)

        async def attempt(target):
            async with sessions() as s:
                return await jobs.move(s, jid, target)
        results = await asyncio.gather(attempt(jobs.CANCELLED), attempt(jobs.COMPLETED))
        async with sessions() as s:
            return results, (await s.get(Job, jid)).status
    results, status = run(db_url, fn)
    assert sorted(results) == [False, True]
    assert status == (jobs.CANCELLED if results[0] else jobs.COMPLETED)


def test_passport_follows_the_newest_job_and_keeps_the_newest_completed_avatar(db_url):
    async def fn(sessions):
        t = utcnow()
        old = await _new_job(sessions, created=t - timedelta(seconds=10))
        new = await _new_job(sessions, created=t)
        async with sessions() as s:
            await jobs.move(s, new, jobs.PROCESSING)
            await jobs.move(s, new, jobs.COMPLETED, measurements={"chest": 100.0}, files={"avatar_textured.glb": "new.glb"})
            await jobs.move(s, old, jobs.PROCESSING)
            await jobs.move(s, old, jobs.COMPLETED, measurements={"chest": 90.0}, files={"avatar_textured.glb": "old.glb"})
        async with sessions() as s:
            p = await s.get(Avatar, ("acme", "u1"))
            return p.latest_job_id == new, p.avatar_job_id == new, p.avatar_key, p.measurements, p.status
    assert run(db_url, fn) == (True, True, "new.glb", {"chest": 100.0}, "completed")


def test_a_failed_retry_keeps_the_previous_avatar(db_url):
    async def fn(sessions):
        t = utcnow()
        first = await _new_job(sessions, created=t - timedelta(seconds=5))
        async with sessions() as s:
            await jobs.move(s, first, jobs.PROCESSING)
            await jobs.move(s, first, jobs.COMPLETED, measurements={"waist": 80.0}, files={"avatar_textured.glb": "a.glb"})
        second = await _new_job(sessions, created=t)
        async with sessions() as s:
            await jobs.move(s, second, jobs.FAILED, error_code="no_person")
        async with sessions() as s:
            p = await s.get(Avatar, ("acme", "u1"))
            return p.status, p.latest_job_id == second, p.avatar_job_id == first, p.avatar_key
    assert run(db_url, fn) == ("failed", True, True, "a.glb")


def test_api_keys_are_stored_hashed_and_revocable(db_url):
    async def fn(sessions):
        async with sessions() as s:
            row, token = await auth.create_key(s, "acme", "ci")
        async with sessions() as s:
            stored = [r.key_hash for r in (await s.execute(select(ApiKey))).scalars()]
            who = await auth.authenticate(s, token)
            assert await auth.revoke_key(s, row.id)
            after = await auth.authenticate(s, token)
            wrong = await auth.authenticate(s, token[:-2] + "xx")
        return token, stored, who, after, wrong
    token, stored, who, after, wrong = run(db_url, fn)
    assert token not in stored and auth.hash_key(token) in stored
    assert who is not None and who.tenant == "acme" and not who.is_admin
    assert after is None and wrong is None


def test_tenant_names_are_checked(db_url):
    async def fn(sessions):
        async with sessions() as s:
            await auth.create_key(s, "../evil")
    with pytest.raises(ValueError, match="tenant"):
        run(db_url, fn)


def test_concurrent_first_jobs_of_a_new_user_all_get_created(db_url):
    async def fn(sessions):
        ids = await asyncio.gather(*(_new_job(sessions, user="u-new") for _ in range(8)))
        async with sessions() as s:
            p = await s.get(Avatar, ("acme", "u-new"))
            return ids, p.latest_job_id
    ids, latest = run(db_url, fn)
    assert len(set(ids)) == 8 and latest in ids


def _credited_job(sessions, tenant: str, cost: int = 1):
    """Create a job and reserve its cost in one transaction, as the API does."""
    async def go():
        async with sessions() as s:
            job = Job(id=new_id(), tenant=tenant, user_id="u1", status=jobs.QUEUED, progress=0, message="",
                      height_cm=170, gender="female", files={}, measurements={}, timings={}, attempts=0)
            s.add(job)
            await jobs.register_new(s, job)
            try:
                await credits.reserve(s, job, cost)
            except credits.NoCredit:
                await s.rollback()
                return None
            await s.commit()
            return job.id
    return go()


def test_concurrent_reservations_never_overdraw_a_balance(db_url):
    async def fn(sessions):
        async with sessions() as s:
            await credits.grant(s, "acme", 3)
        made = await asyncio.gather(*(_credited_job(sessions, "acme") for _ in range(6)))
        async with sessions() as s:
            return made, await credits.balance(s, "acme")
    made, now = run(db_url, fn)
    assert sum(m is not None for m in made) == 3
    assert (now.balance, now.reserved) == (0, 3)


def test_a_final_move_commits_or_releases_once_and_the_balance_is_the_ledgers_sum(db_url):
    async def fn(sessions):
        async with sessions() as s:
            await credits.grant(s, "acme", 5)
        done, failed = await _credited_job(sessions, "acme"), await _credited_job(sessions, "acme")
        async with sessions() as s:
            for jid in (done, failed):
                await jobs.move(s, jid, jobs.PROCESSING)
            assert await jobs.move(s, done, jobs.COMPLETED)
            assert await jobs.move(s, failed, jobs.FAILED, error_code="worker_lost")
            again = [await jobs.move(s, jid, t) for jid in (done, failed) for t in (jobs.FAILED, jobs.CANCELLED)]
            kinds = sorted((m.job_id == done, m.kind) for m in await credits.movements(s, "acme") if m.job_id)
            return again, kinds, await credits.balance(s, "acme")
    again, kinds, now = run(db_url, fn)
    assert again == [False] * 4
    assert kinds == [(False, "release"), (False, "reserve"), (True, "commit"), (True, "reserve")]
    assert (now.balance, now.reserved) == (4, 0)


def test_a_tenant_without_grants_is_not_metered(db_url):
    async def fn(sessions):
        jid = await _credited_job(sessions, "free")
        async with sessions() as s:
            return jid, await credits.balance(s, "free"), await credits.movements(s, "free")
    jid, now, moves = run(db_url, fn)
    assert jid is not None and not now.metered and moves == []
