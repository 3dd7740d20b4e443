"""064 — Redis with a password (issue 17, item 3).

A fleet of its own whose Redis requires a password, which every program
reads from a file (PROMO_REDIS_PASSWORD_FILE: the secret is in no
environment). Ingest claims keys and reads statuses, the processors
checkpoint, the sink writes statuses, all authenticated: a write settles,
its status is read back, checkpoints appear. Redis refuses a client
without the password, and a program given a wrong one says so and names
no password.
"""

import os
import subprocess
import tempfile
import uuid

import pytest

from client import ADMIN, Client
from fleet import ROOT, Fleet, FleetError, free_ports


def test_every_program_authenticates():
    secret = "rp-" + uuid.uuid4().hex
    d = tempfile.mkdtemp(prefix="promo-e2e-064-")
    path = os.path.join(d, "redis.password")
    with open(path, "w") as f:
        f.write(secret + "\n")
    os.chmod(path, 0o600)
    fleet = Fleet(env={"PROMO_REDIS_PASSWORD_FILE": path})
    try:
        fleet.start()
        c = Client(fleet.http_port)
        user = "k064-" + uuid.uuid4().hex[:8]
        key = "k064-" + uuid.uuid4().hex[:8]
        doc = c.run("/v1/points/%s/earn" % user, {"amount": 9, "reason": "auth"}, key=ADMIN,
                    headers={"Idempotency-Key": key})
        assert doc["status"] == "SUCCEEDED" and doc["result"]["balance"] == 9, doc
        assert fleet.redis("EXISTS", "promo:idem:" + key) == 1
        assert fleet.redis("KEYS", "promo:{point:*}:meta")
        # No password, no answer.
        saved = fleet.env.pop("PROMO_REDIS_PASSWORD_FILE")
        try:
            with pytest.raises(FleetError, match="NOAUTH"):
                fleet.redis("GET", "promo:req:" + key)
        finally:
            fleet.env["PROMO_REDIS_PASSWORD_FILE"] = saved
        # A wrong password: promoctl names the refusal, never a password.
        env = dict(fleet.env, PROMO_REDIS_PASSWORD="wrong-" + secret)
        env.pop("PROMO_REDIS_PASSWORD_FILE")
        bindir = os.environ.get("PROMO_BIN_DIR") or os.path.join(ROOT, "build", "bin")
        ctl = os.path.join(bindir, "promoctl")
        if not os.path.exists(ctl):
            ctl = os.path.join(ROOT, "build", "bin", "promoctl")
        p = subprocess.run([ctl, "follow", "--timeout-ms", "500", key], env=env, cwd=ROOT, timeout=60,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = p.stdout.decode(errors="replace")
        assert "AUTH" in out and "refused" in out, out
        assert secret not in out, out
        for name in ("ingest", "sink-mysql", "processor-point"):
            with open(fleet.log_path(name), errors="replace") as f:
                assert secret not in f.read(), name
    except Exception:
        fleet.failed = True
        raise
    finally:
        fleet.stop()
