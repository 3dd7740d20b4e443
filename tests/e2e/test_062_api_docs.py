"""test_062_api_docs.py — /api/docs renders in a real browser, offline.

Debian's headless Chromium (tools/deps.sh installs it) loads
http://127.0.0.1:<port>/api/docs from the fleet's ingest, with background
networking off, takes a screenshot and dumps the DOM after the page's
scripts ran. The screenshot must be a real picture (a PNG of some size that
is not one flat colour) and the DOM must name the routes, which only happens
once Swagger UI has fetched and rendered /openapi.json. The plain fallback
page (Swagger UI's files missing) is rendered too, on an ingest of our own.
Where Chromium is missing the test is skipped, saying so.
"""

import os
import shutil
import struct
import subprocess
import tempfile
import zlib

import pytest

from test_060_gateway import Ingest

ROUTES = ("/v1/coupon-policies", "/v1/points/{user_id}/earn", "/v1/time-sales/{sale_id}/orders",
          "/v1/requests/{request_id}")


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(exe, url, *extra, timeout=120):
    profile = tempfile.mkdtemp(prefix="promo-chromium-")
    try:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--user-data-dir=" + profile, "--window-size=1280,900",
               "--virtual-time-budget=15000"] + list(extra) + [url]
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def png_pixels(data):
    """(width, height, set of distinct pixels in a sample) of an 8-bit RGB(A)
    non-interlaced PNG, decoded with the standard library only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    width, height, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, ihdr
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    colours = set()
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        if y % 8 == 0:
            for x in range(0, width, 8):
                colours.add(bytes(line[x * bpp:x * bpp + 3]))
        prev = line
    return width, height, colours


def test_api_docs_render_in_chromium(fleet):
    exe = chromium()
    if not exe:
        pytest.skip("Debian's chromium is not installed (tools/deps.sh installs it); /api/docs not rendered")
    url = fleet.url("/api/docs")
    r = fleet.get("/api/docs", role=None)
    assert r.status == 200 and r.headers["content-type"].startswith("text/html"), r
    assert fleet.get("/api/docs/docs.js", role=None).status == 200

    dom = run_chromium(exe, url, "--dump-dom")
    html = dom.stdout.decode(errors="replace")
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    missing = [p for p in ROUTES if p not in html]
    assert not missing, "DOM lacks %s:\n%s" % (missing, html[:3000])

    out = tempfile.mkdtemp(prefix="promo-shot-")
    try:
        shot = os.path.join(out, "api-docs.png")
        res = run_chromium(exe, url, "--screenshot=" + shot, "--hide-scrollbars")
        assert res.returncode == 0 and os.path.exists(shot), res.stderr.decode(errors="replace")[-2000:]
        with open(shot, "rb") as f:
            data = f.read()
        assert len(data) > 20000, "screenshot only %d bytes" % len(data)
        width, height, colours = png_pixels(data)
        assert (width, height) == (1280, 900), (width, height)
        assert len(colours) > 20, "screenshot is nearly one colour (%d)" % len(colours)
        keep = os.environ.get("PROMO_DOCS_SCREENSHOT")
        if keep:
            shutil.copy(shot, keep)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_api_docs_fallback_without_swagger_ui(fleet):
    exe = chromium()
    if not exe:
        pytest.skip("Debian's chromium is not installed (tools/deps.sh installs it); /api/docs not rendered")
    ing = Ingest(fleet, PROMO_DOCS_DIR=os.path.join(fleet.var, "no-such-dir"))
    try:
        assert ing.request("GET", "/api/docs/swagger-ui-bundle.js")[0] == 404
        dom = run_chromium(exe, "http://127.0.0.1:%d/api/docs" % ing.port, "--dump-dom")
        html = dom.stdout.decode(errors="replace")
        assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
        missing = [p for p in ROUTES if p not in html]
        assert not missing, "DOM lacks %s:\n%s" % (missing, html[:3000])
        assert "swagger-ui-wrap" not in html
    finally:
        assert ing.stop() == 0, ing.logs()
