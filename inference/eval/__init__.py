"""Eval tooling: sets of synthetic photos of bodies whose shape we know (``generate``,
``scenes``, ``truth``), the named splits (``splits``) and the accuracy report (``report``).
Nothing here runs in a job."""
