"""test_000_fleet_smoke.py — the fleet starts and every part of it answers.

The first end-to-end test, and the one to run when anything else fails:
ingest is live and ready, the MySQL sink has run the migrations, Redis
answers, and the broker serves the five promo topics with their
partitions. No commands are sent here.
"""

from confluent_kafka.admin import AdminClient

from fleet import TOPICS


def test_healthz(fleet):
    r = fleet.get("/healthz", role=None)
    assert r.status == 200, r


def test_readyz(fleet):
    r = fleet.get("/readyz", role=None)
    assert r.status == 200, r


def test_mysql_has_the_tables(fleet):
    want = set(fleet.migration_tables())
    assert "requests" in want
    have = {row[0] for row in fleet.mysql_query("SHOW TABLES")}
    assert want <= have, "missing tables: %s" % sorted(want - have)


def test_redis_answers(fleet):
    assert fleet.redis("PING") == "PONG"


def test_broker_lists_the_topics(fleet):
    admin = AdminClient({"bootstrap.servers": fleet.bootstrap_servers})
    md = admin.list_topics(timeout=10)
    assert len(md.brokers) >= 1
    for name in TOPICS:
        assert name in md.topics, "topic %s missing; have %s" % (name, sorted(md.topics))
        t = md.topics[name]
        assert t.error is None, t.error
        assert len(t.partitions) == fleet.partitions == 12
        assert all(p.leader >= 1 for p in t.partitions.values())


def test_every_process_runs(fleet):
    status = fleet.status()
    assert all(status.values()), status
