/* reconcile.h — `promoctl reconcile`: MySQL's read models against the
 * engine's results log (reconcile.c). */
#ifndef PROMO_RECONCILE_H
#define PROMO_RECONCILE_H

#include <mysql.h>
#include <stddef.h>

/* Compares, prints every difference on stdout and, with repair, writes the
 * results of what differs again through the sink's writer and compares
 * once more. Returns 0 when MySQL agrees (after the repair, if asked), 1
 * when differences remain, -1 with errstr when it could not tell. */
int reconcile_run(MYSQL *my, int repair, char *errstr, size_t errstr_size);

#endif
