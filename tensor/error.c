/* Errors: one thread-local status and message. Library functions set them and return a status
 * or NULL; they never print or exit. An op handed a NULL input returns NULL without touching
 * the message, so one check after a chain reports the first real cause. */
#include "internal.h"

#include <stdarg.h>
#include <string.h>

static _Thread_local tg_status err_status = TG_OK;
static _Thread_local char err_msg[1024];

const char *tg_last_error(void)
{
    return err_msg;
}

tg_status tg_last_status(void)
{
    return err_status;
}

void tg_clear_error(void)
{
    err_status = TG_OK;
    err_msg[0] = '\0';
}

tg_status tg_set_error(tg_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    err_status = status;
    return status;
}

const char *tg_status_name(tg_status status)
{
    switch (status) {
    case TG_OK: return "TG_OK";
    case TG_ERR_ARG: return "TG_ERR_ARG";
    case TG_ERR_SHAPE: return "TG_ERR_SHAPE";
    case TG_ERR_STATE: return "TG_ERR_STATE";
    case TG_ERR_NOMEM: return "TG_ERR_NOMEM";
    case TG_ERR_IO: return "TG_ERR_IO";
    case TG_ERR_FORMAT: return "TG_ERR_FORMAT";
    }
    return "TG_ERR_UNKNOWN";
}
