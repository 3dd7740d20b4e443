"""034 — a path id is the id as sent: no spelling of a path reaches another entity.

Ingest routes on the path exactly as the client sent it: nothing is
percent-decoded and no dot segment is removed (CivetWeb's decode_url is off,
and the router reads local_uri_raw, not local_uri). So an id that is not
valid as written is a 400 naming its field ("p%2F..%2Fx", "%2E%2E", even
"i34%78" for a valid "i34x"), a bare "." or ".." id is a 400, and a path
with extra segments ("p/../x", "x/./issue", "//x") matches no route: 404.
Each spelling is tried on an issue, a redeem and a GET, and afterwards the
policy they aim at shows that nothing reached it: a later issue gets serial
3 (two were issued before), and its coupon 1 is still ISSUED.

Query strings still work: their values are decoded by mg_get_var()
(`?limit=%31`, a cursor `i34x%3A1`). Ids carry the prefix "i34".
"""

from client import ADMIN, Client, now_ms

POLICY = "i34x"
USER = "i34u"


def assert_error(status, doc, want_status, code, field=None):
    assert status == want_status, (status, doc)
    assert isinstance(doc, dict) and doc["error"]["code"] == code, doc
    if field is not None:
        assert doc["error"].get("field") == field, doc


def ok(doc):
    assert doc["status"] == "SUCCEEDED" and doc["reason"] is None, doc
    return doc["result"]


def test_path_ids_as_sent(fleet):
    c = Client(fleet.http_port)
    t = now_ms()
    for pol in (POLICY, "i34p", "i34.x_y-z"):
        ok(c.run("/v1/coupon-policies", {
            "policy_id": pol, "name": "path ids", "discount_type": "FIXED", "discount_value": 500,
            "total_quantity": 10, "per_user_limit": 5, "issue_starts_at": t - 60000,
            "issue_ends_at": t + 3600000, "valid_days": 3}, key=ADMIN))
    issue = "/v1/coupon-policies/%s/issue" % POLICY
    first_rid = c.submit(issue, {"user_id": USER})
    assert ok(c.wait(first_rid))["coupon_id"] == POLICY + ":1"
    assert ok(c.run(issue, {"user_id": USER}))["coupon_id"] == POLICY + ":2"

    # Each aims at policy i34x (or its coupon 1) in another spelling.
    issue_body = {"user_id": USER}
    redeem_body = {"user_id": USER, "order_id": "i34o1", "order_amount": 10000}
    cases = [
        ("POST", "/v1/coupon-policies/i34p%2F..%2Fi34x/issue", issue_body, 400, "policy_id"),
        ("POST", "/v1/coupon-policies/%2E%2E/issue", issue_body, 400, "policy_id"),
        ("POST", "/v1/coupon-policies/i34p/%2E%2E/i34x/issue", issue_body, 404, None),
        ("POST", "/v1/coupon-policies/i34%78/issue", issue_body, 400, "policy_id"),  # %78 is "x"
        ("POST", "/v1/coupon-policies/%41/issue", issue_body, 400, "policy_id"),
        ("POST", "/v1/coupon-policies/i34p/../i34x/issue", issue_body, 404, None),
        ("POST", "/v1/coupon-policies/../issue", issue_body, 400, "policy_id"),
        ("POST", "/v1/coupon-policies/i34x/./issue", issue_body, 404, None),
        ("POST", "/v1/coupon-policies//i34x/issue", issue_body, 404, None),
        ("POST", "/v1/coupons/i34p%2F..%2Fi34x:1/redeem", redeem_body, 400, "coupon_id"),
        ("POST", "/v1/coupons/i34%78:1/redeem", redeem_body, 400, "coupon_id"),
        ("POST", "/v1/coupons/i34x%3A1/redeem", redeem_body, 400, "coupon_id"),
        ("POST", "/v1/coupons/%2E%2E/redeem", redeem_body, 400, "coupon_id"),
        ("POST", "/v1/coupons/i34p/../i34x:1/redeem", redeem_body, 404, None),
        ("GET", "/v1/coupon-policies/i34%78", None, 400, "policy_id"),
        ("GET", "/v1/coupon-policies/i34p%2F..%2Fi34x", None, 400, "policy_id"),
        ("GET", "/v1/coupon-policies/i34p/../i34x", None, 404, None),
        ("GET", "/v1/coupon-policies/..", None, 400, "policy_id"),
        ("GET", "/v1/users/i34%75/coupons", None, 400, "user_id"),  # %75 is "u"
        ("GET", "/v1/points/i34u%2F..%2Fi34v", None, 400, "user_id"),
    ]
    for method, path, body, want, field in cases:
        status, doc, _ = c.request(method, path, body=body)
        if want == 400:
            assert_error(status, doc, 400, "INVALID_FIELD", field)
        else:
            assert_error(status, doc, 404, "NOT_FOUND")

    # Valid ids, dots and all, and query values, which are still decoded.
    status, doc, _ = c.get("/v1/coupon-policies/i34.x_y-z")
    assert status == 200 and doc["policy_id"] == "i34.x_y-z", doc
    status, doc, _ = c.get("/v1/requests/%s?wait_ms=1000" % first_rid)
    assert status == 200 and doc["status"] == "SUCCEEDED", doc
    status, doc, _ = c.get("/v1/users/%s/coupons?limit=%%31" % USER)
    assert status == 200 and [i["coupon_id"] for i in doc["items"]] == [POLICY + ":1"], doc
    assert doc["next"] == POLICY + ":1", doc
    status, doc, _ = c.get("/v1/users/%s/coupons?limit=1&cursor=i34x%%3A1" % USER)
    assert status == 200 and [i["coupon_id"] for i in doc["items"]] == [POLICY + ":2"], doc

    # A later issue on i34x, in the partition every command above would have
    # reached: serial 3, so none of them issued, and coupon 1 was not redeemed.
    assert ok(c.run(issue, {"user_id": "i34w"}))["coupon_id"] == POLICY + ":3"
    status, doc, _ = c.get("/v1/coupon-policies/" + POLICY)
    assert status == 200 and doc["issued"] == 3, doc
    rows = fleet.mysql_query("SELECT coupon_id, status FROM coupons WHERE policy_id = %s ORDER BY coupon_id",
                             (POLICY,))
    assert rows == ((POLICY + ":1", "ISSUED"), (POLICY + ":2", "ISSUED"), (POLICY + ":3", "ISSUED")), rows
    assert fleet.mysql_query("SELECT COUNT(*) FROM coupons WHERE policy_id = 'i34p'") == ((0,),)
