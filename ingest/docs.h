/* docs.h — the /api/docs page: Swagger UI rendering /openapi.json, offline.
 *
 * Swagger UI's files come from the swagger-ui-dist npm package, which
 * `make deps` installs under build/npm (nothing of it is kept in git); ingest
 * serves a fixed list of them from that directory at /api/docs/<name>. The
 * page also loads /api/docs/docs.js, built in here: it starts Swagger UI, or,
 * when the package is missing, renders a plain list of every operation from
 * /openapi.json itself. Either way the browser fetches nothing from outside.
 */
#ifndef PROMO_INGEST_DOCS_H
#define PROMO_INGEST_DOCS_H

#include <stddef.h>

/* The HTML of /api/docs and the built-in script /api/docs/docs.js. */
extern const char docs_page[];
extern const char docs_script[];

/* The directory Swagger UI's files are served from: PROMO_DOCS_DIR, else
 * the first of build/npm/node_modules/swagger-ui-dist next to the binary's
 * build directory or under the working directory that holds
 * swagger-ui-bundle.js. Returns 0 with dir filled, or -1 (fallback only). */
int docs_find_dir(char *dir, size_t dir_size);

/* The file of an asset name, if it is one we serve: 0 with path and its
 * MIME type filled, else -1 (answer 404). dir may be NULL. */
int docs_asset(const char *dir, const char *name, char *path, size_t path_size, const char **mime);

#endif
