"""ckptcheck.py — watches the point checkpoints in Redis while the suite runs.

A processor that finds an entry of its checkpoint malformed drops the whole
checkpoint and replays its partition from the start: no result is wrong, but
the entry shows that some account state encodes into bytes that its own
decoder refuses, and the next owner then pays a full replay. By the time the
log says so, the entry has usually been overwritten, so this scanner reads
every promo:{point:N}:state hash every few seconds, checks each account with
the same rules as processors/point.c point_decode() (restated here), and
keeps the first bad values it sees (hex and the rule broken) for the report.
"""

import socket
import threading

NO_EXPIRY = (1 << 63) - 1


class Raw:
    """A minimal Redis client that keeps bulk strings as bytes."""

    def __init__(self, port):
        self.port = port

    def cmd(self, *args):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            out = b"*%d\r\n" % len(args)
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            return _read(s.makefile("rb"))


def _read(f):
    line = f.readline()
    if not line:
        raise OSError("closed")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind in (b"+", b"-"):
        return rest
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:n]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read(f) for _ in range(n)]
    raise OSError("bad reply")


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def u8(self):
        if self.p >= len(self.b):
            raise ValueError("truncated")
        self.p += 1
        return self.b[self.p - 1]

    def i64(self):
        u, shift = 0, 0
        while True:
            c = self.u8()
            u |= (c & 0x7F) << shift
            shift += 7
            if not c & 0x80:
                return (u >> 1) ^ -(u & 1)
            if shift >= 70:
                raise ValueError("varint too long")

    def s(self):
        n = self.i64()
        if n < 0 or self.p + n > len(self.b):
            raise ValueError("bad string length")
        self.p += n
        return self.b[self.p - n:self.p].decode(errors="replace")

    def expiry(self):
        has = self.u8()
        if has > 1:
            raise ValueError("bad expiry flag")
        return self.i64() if has else NO_EXPIRY


def check_point_account(val):
    """None when val decodes as processors/point.c would accept it, else why."""
    r = Reader(val)
    try:
        version = r.u8()
        if version not in (1, 2):  # 2 adds the pending lots at the end
            return "version byte"
        balance = r.i64()
        r.i64()  # version
        seq = r.i64()
        nlots = r.i64()
        lots, total = [], 0
        for i in range(nlots):
            left, amount, exp, es = r.i64(), r.i64(), r.expiry(), r.i64()
            if left < 0 or amount <= 0 or left > amount or es < 1 or es > seq:
                return "lot %d: left %d amount %d earn_seq %d (seq %d)" % (i, left, amount, es, seq)
            if lots and (lots[-1][2] > exp or (lots[-1][2] == exp and lots[-1][3] >= es)):
                return "lot %d out of order" % i
            lots.append([left, amount, exp, es])
            total += left
        if total != balance:
            return "lots hold %d, balance %d" % (total, balance)
        nuses = r.i64()
        seen = set()
        for i in range(nuses):
            oid, cancelled, amount, npieces = r.s(), r.u8(), r.i64(), r.i64()
            if cancelled > 1 or amount <= 0 or npieces < 1 or oid in seen:
                return "use %s: cancelled %d amount %d pieces %d dup %s" % (oid, cancelled, amount, npieces,
                                                                        oid in seen)
            seen.add(oid)
            taken = 0
            for j in range(npieces):
                es, exp, t = r.i64(), r.expiry(), r.i64()
                if t <= 0 or t > amount - taken:
                    return "use %s piece %d: taken %d of %d" % (oid, j, t, amount - taken)
                taken += t
                if cancelled:
                    continue
                # A lot is named by its entry's seq and its expiry (points
                # released together share one entry, one lot per expiry).
                lot = next((l for l in lots if l[3] == es and l[2] == exp), None)
                if lot is None:
                    return "use %s (uncancelled) takes from lot earn_seq %d, which is not there" % (oid, es)
                if lot[2] != exp or t > lot[1] - lot[0]:
                    return "use %s piece %d: taken %d but lot %d has amount %d left %d" % (oid, j, t, es, lot[1],
                                                                                           lot[0])
            if taken != amount:
                return "use %s: pieces sum %d, amount %d" % (oid, taken, amount)
        if version == 2:
            for i in range(r.i64()):
                amount, exp, available_at, serial, reason = r.i64(), r.expiry(), r.i64(), r.i64(), r.s()
                if amount <= 0:
                    return "pending lot %d: amount %d" % (i, amount)
        if r.p != len(val):
            return "trailing bytes"
    except ValueError as e:
        return str(e)
    return None


class Scanner:
    def __init__(self, redis_port, partitions=12, every=2.0):
        self.redis = Raw(redis_port)
        self.partitions, self.every = partitions, every
        self.bad = {}  # (partition, key) -> (why, hex)
        self.scans = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_event.set()
        self.thread.join(10)

    def scan(self):
        for p in range(self.partitions):
            try:
                kv = self.redis.cmd("HGETALL", "promo:{point:%d}:state" % p)
            except OSError:
                return
            if not isinstance(kv, list):
                continue
            for i in range(0, len(kv) - 1, 2):
                k, v = kv[i], kv[i + 1]
                if not k.startswith(b"a:"):
                    continue
                why = check_point_account(v)
                if why and (p, k) not in self.bad and len(self.bad) < 10:
                    self.bad[(p, k)] = (why, v.hex())
        self.scans += 1

    def _run(self):
        while not self.stop_event.wait(self.every):
            try:
                self.scan()
            except Exception:
                pass
