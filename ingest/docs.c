/* docs.c — the /api/docs page, its script and the Swagger UI files (docs.h).
 *
 * Only names on the `assets` list are ever served, so no path from a request
 * reaches the file system.
 */
#include "docs.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

const char docs_page[] = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                         "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                         "<title>Promotion engine API</title>"
                         "<link rel=\"stylesheet\" href=\"/api/docs/swagger-ui.css\">"
                         "<style>body{margin:0;font-family:sans-serif}#plain{max-width:960px;margin:0 auto;padding:1em}"
                         "#plain .op{border:1px solid #ccc;border-radius:4px;margin:.5em 0;padding:.5em}"
                         "#plain .m{display:inline-block;min-width:4em;font-weight:bold;color:#fff;background:#49cc90;"
                         "padding:.1em .4em;border-radius:3px;text-align:center}#plain .m.get{background:#61affe}"
                         "#plain code{font-size:1.05em}</style></head>\n"
                         "<body><div id=\"swagger-ui\"></div><div id=\"plain\"></div>"
                         "<noscript><a href=\"/openapi.json\">/openapi.json</a></noscript>"
                         "<script src=\"/api/docs/swagger-ui-bundle.js\"></script>"
                         "<script src=\"/api/docs/docs.js\"></script></body></html>\n";

const char docs_script[] =
    "(function () {\n"
    "  'use strict';\n"
    "  if (window.SwaggerUIBundle) {\n"
    "    window.ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui', deepLinking: true,\n"
    "      presets: [SwaggerUIBundle.presets.apis], layout: 'BaseLayout', docExpansion: 'list'});\n"
    "    return;\n"
    "  }\n"
    "  var root = document.getElementById('plain');\n"
    "  function el(tag, text, cls) {\n"
    "    var e = document.createElement(tag);\n"
    "    if (text) e.textContent = text;\n"
    "    if (cls) e.className = cls;\n"
    "    return e;\n"
    "  }\n"
    "  fetch('/openapi.json').then(function (r) { return r.json(); }).then(function (doc) {\n"
    "    root.appendChild(el('h1', doc.info.title + ' ' + doc.info.version));\n"
    "    root.appendChild(el('p', doc.info.description || ''));\n"
    "    Object.keys(doc.paths).forEach(function (path) {\n"
    "      var item = doc.paths[path];\n"
    "      ['get', 'post', 'put', 'patch', 'delete'].forEach(function (m) {\n"
    "        var op = item[m];\n"
    "        if (!op) return;\n"
    "        var box = el('div', null, 'op');\n"
    "        var h = el('h3');\n"
    "        h.appendChild(el('span', m.toUpperCase(), 'm ' + m));\n"
    "        h.appendChild(document.createTextNode(' '));\n"
    "        h.appendChild(el('code', path));\n"
    "        box.appendChild(h);\n"
    "        box.appendChild(el('p', op.summary || ''));\n"
    "        var codes = Object.keys(op.responses || {}).map(function (c) {\n"
    "          return c + ' ' + (op.responses[c].description || '');\n"
    "        });\n"
    "        box.appendChild(el('p', 'Responses: ' + codes.join('; ')));\n"
    "        root.appendChild(box);\n"
    "      });\n"
    "    });\n"
    "  }).catch(function (e) { root.appendChild(el('p', 'cannot load /openapi.json: ' + e)); });\n"
    "})();\n";

typedef struct asset {
    const char *name;
    const char *mime;
} asset;

static const asset assets[] = {
    {"swagger-ui.css", "text/css"},
    {"swagger-ui-bundle.js", "application/javascript"},
    {"swagger-ui-standalone-preset.js", "application/javascript"},
    {"favicon-32x32.png", "image/png"},
    {"favicon-16x16.png", "image/png"},
};

static int has_bundle(const char *dir) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/swagger-ui-bundle.js", dir);
    return access(path, R_OK) == 0;
}

int docs_find_dir(char *dir, size_t dir_size) {
    const char *env = cfg_str("PROMO_DOCS_DIR", NULL);
    if (env) {
        snprintf(dir, dir_size, "%s", env);
        return has_bundle(dir) ? 0 : -1;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        /* build/bin/promo-ingest and build/san/bin/promo-ingest */
        const char *rel[] = {"/../npm/node_modules/swagger-ui-dist", "/../../npm/node_modules/swagger-ui-dist"};
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
            snprintf(dir, dir_size, "%s%s", exe, rel[i]);
            if (has_bundle(dir)) return 0;
        }
    }
    snprintf(dir, dir_size, "build/npm/node_modules/swagger-ui-dist");
    return has_bundle(dir) ? 0 : -1;
}

int docs_asset(const char *dir, const char *name, char *path, size_t path_size, const char **mime) {
    if (!dir) return -1;
    for (size_t i = 0; i < sizeof assets / sizeof assets[0]; i++) {
        if (strcmp(assets[i].name, name) != 0) continue;
        snprintf(path, path_size, "%s/%s", dir, name);
        *mime = assets[i].mime;
        return access(path, R_OK) == 0 ? 0 : -1;
    }
    return -1;
}
