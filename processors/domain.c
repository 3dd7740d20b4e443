/* domain.c — finds a domain's state machine by name.
 *
 * The processor is one program for all three domains; its configuration names
 * the domain it serves ("coupon", "point", "timesale"), and this table turns
 * that name into the domain's operations (coupon.c, point.c, timesale.c).
 */
#include "domain.h"

#include <string.h>

const domain_ops *domain_by_name(const char *name) {
    static const domain_ops *const all[] = {&coupon_ops, &point_ops, &timesale_ops};
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i]->name, name) == 0) return all[i];
    return NULL;
}
