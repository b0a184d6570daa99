#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static LogLevel log_level = LOG_LEVEL_INFO;
static const char *log_ident = "legba";

static const char *const level_names[] = {
    [LOG_LEVEL_ERROR] = "error",
    [LOG_LEVEL_WARN] = "warn",
    [LOG_LEVEL_INFO] = "info",
    [LOG_LEVEL_DEBUG] = "debug",
};

void log_set_level(LogLevel level)
{
    log_level = level;
}

void log_set_ident(const char *ident)
{
    log_ident = ident;
}

int log_level_parse(const char *name, LogLevel *ret_level)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *ret_level = (LogLevel)i;
            return 0;
        }
    }
    return -EINVAL;
}

/* One fprintf per line so lines from different threads never interleave. */
void log_msg(LogLevel level, const char *fmt, ...)
{
    if (level > log_level)
        return;

    int saved_errno = errno;
    char stamp[32];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);

    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);

    fprintf(stderr, "%s.%03ldZ %s[%d] %s: %s\n", stamp, ts.tv_nsec / 1000000, log_ident,
            (int)getpid(), level_names[level], line);
    errno = saved_errno;
}
