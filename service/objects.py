"""Where a job's artefacts live in storage, in one place.

Each try of a job writes under its own prefix: a late or repeated try can never overwrite or
delete the files another try delivered, and the completed job's row points at its own try's keys
(that pointer is the promotion). A try that ends without completing removes its prefix.
"""
from __future__ import annotations


def try_prefix(user_id: str, job_id: str, try_no: int) -> str:
    return f"avatars/{user_id}/{job_id}/t{try_no}/"


def artefact_key(user_id: str, job_id: str, name: str, try_no: int) -> str:
    return f"{try_prefix(user_id, job_id, try_no)}{name}"
