"""063 — API keys as SHA-256 digests, with names, several per role
(issue 17, item 1).

An ingest of its own reads PROMO_API_KEYS with a digest entry
(`sha256:<hex>:role:name`), a clear entry with a name, and two admin keys
(a rotation under way). Each key authenticates with its role, the key that
is only a digest works although its clear text appears nowhere in the
configuration, a wrong key is 401, a client key on an admin route 403; the
log names the key that made each admin write and never holds a key. Bad
entries stop ingest at start with a message that names the entry's place,
never its secret.
"""

import hashlib
import os
import subprocess
import uuid

from fleet import ROOT, free_ports
from test_060_gateway import Ingest


def sha(k):
    return hashlib.sha256(k.encode()).hexdigest()


def test_digests_names_and_rotation(fleet):
    old_admin, new_admin, client = ("adm-%s" % uuid.uuid4().hex, "adm2-%s" % uuid.uuid4().hex,
                                    "cli-%s" % uuid.uuid4().hex)
    keys = ",".join(["sha256:%s:admin:ops-2026" % sha(new_admin), "%s:admin:ops-2025" % old_admin,
                     "sha256:%s:client:shop-web" % sha(client).upper()])
    ing = Ingest(fleet, PROMO_API_KEYS=keys)
    try:
        body = {"amount": 5, "reason": "keys"}
        user = "k063-" + uuid.uuid4().hex[:8]
        for key in (new_admin, old_admin):
            st, _, doc = ing.request("POST", "/v1/points/%s/earn" % user, body,
                                     headers={"Authorization": "Bearer " + key})
            assert st == 202, (st, doc)
        st, _, doc = ing.request("POST", "/v1/points/%s/earn" % user, body,
                                 headers={"Authorization": "Bearer " + client})
        assert st == 403, (st, doc)
        st, _, doc = ing.request("GET", "/v1/points/%s" % user, headers={"Authorization": "Bearer " + client})
        assert st == 200, (st, doc)
        # The digest itself is no key.
        st, _, _ = ing.request("GET", "/v1/points/%s" % user, headers={"Authorization": "Bearer " + sha(client)})
        assert st == 401
        st, _, _ = ing.request("GET", "/v1/points/%s" % user, headers={"Authorization": "Bearer nope"})
        assert st == 401
    finally:
        assert ing.stop() == 0, ing.logs()
    log = ing.logs()
    assert "key=ops-2026" in log and "key=ops-2025" in log, log
    for secret in (old_admin, new_admin, client):
        assert secret not in log


def test_bad_entries_stop_ingest_without_echoing_them(fleet):
    bindir = os.environ.get("PROMO_BIN_DIR", os.path.join(ROOT, "build", "bin"))
    secret = "s3cr3t-%s" % uuid.uuid4().hex
    for keys, why in (("sha256:%s:admin" % ("ab" * 31), "64 hex"),
                      ("sha256:%sZZ:admin" % ("ab" * 31), "64 hex"),
                      ("%s:root" % secret, "role must be admin or client"),
                      ("%s:admin:bad name" % secret, "name must match"),
                      ("%s" % secret, "is not key:role")):
        env = dict(fleet.env, PROMO_API_KEYS="ok-key:client," + keys, PROMO_HTTP_PORT=str(free_ports(1)[0]))
        p = subprocess.run([os.path.join(bindir, "promo-ingest")], env=env, cwd=fleet.var, timeout=30,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = p.stdout.decode(errors="replace")
        assert p.returncode != 0, (keys, out)
        assert why in out and "entry 2" in out, (keys, out)
        assert secret not in out, out
