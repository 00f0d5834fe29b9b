/* Implementation of time.h. Calendar conversion uses the era-based
 * days-from-civil arithmetic (400-year cycles), which needs no tables and
 * no time zone database. */
#include "base/time.h"
#include "base/err.h"

#include <time.h>

int64_t sx_time_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sx_time_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

int64_t sx_time_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t sx_time_days_from_civil(int y, int m, int d)
{
    /* Shift the year so that it starts in March: the leap day is then the
     * last day of the year and month lengths follow a fixed pattern. */
    int64_t yy = (int64_t)y - (m <= 2);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}

void sx_time_civil_from_days(int64_t days, int *y, int *m, int *d)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t dd = doy - (153 * mp + 2) / 5 + 1;
    int64_t mm = mp < 10 ? mp + 3 : mp - 9;

    *y = (int)(yoe + era * 400 + (mm <= 2));
    *m = (int)mm;
    *d = (int)dd;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static void split(int64_t unix_s, int *y, int *mo, int *d, int *h, int *mi, int *s)
{
    int64_t days = floor_div(unix_s, 86400);
    int64_t rem = unix_s - days * 86400;

    sx_time_civil_from_days(days, y, mo, d);
    *h = (int)(rem / 3600);
    *mi = (int)(rem / 60 % 60);
    *s = (int)(rem % 60);
}

/* Writes v (0 <= v < 10^n) as exactly n decimal digits. */
static char *put(char *p, unsigned v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + n;
}

static char *put_date(char *p, int y, int mo, int d)
{
    p = put(p, (unsigned)(y % 10000), 4);
    *p++ = '-';
    p = put(p, (unsigned)mo, 2);
    *p++ = '-';
    return put(p, (unsigned)d, 2);
}

static char *put_datetime(char *p, int64_t unix_s)
{
    int y, mo, d, h, mi, s;

    split(unix_s, &y, &mo, &d, &h, &mi, &s);
    p = put_date(p, y, mo, d);
    *p++ = 'T';
    p = put(p, (unsigned)h, 2);
    *p++ = ':';
    p = put(p, (unsigned)mi, 2);
    *p++ = ':';
    return put(p, (unsigned)s, 2);
}

void sx_time_iso8601_ms(int64_t unix_ms, char out[SX_TIME_ISO_LEN + 1])
{
    int64_t secs = floor_div(unix_ms, 1000);
    char *p = put_datetime(out, secs);

    *p++ = '.';
    p = put(p, (unsigned)(unix_ms - secs * 1000), 3);
    *p++ = 'Z';
    *p = '\0';
}

void sx_time_iso8601(int64_t unix_s, char out[21])
{
    char *p = put_datetime(out, unix_s);

    *p++ = 'Z';
    *p = '\0';
}

void sx_time_format_date(int64_t unix_s, char out[SX_TIME_DATE_LEN + 1])
{
    int y, mo, d;

    sx_time_civil_from_days(floor_div(unix_s, 86400), &y, &mo, &d);
    *put_date(out, y, mo, d) = '\0';
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

int sx_time_parse_date(const char *s, int64_t *unix_s)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, m, d, leap, max;

    if (!s || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &m) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || s[10] != '\0')
        return SX_EINVAL;
    if (y < 1970 || m < 1 || m > 12 || d < 1)
        return SX_EINVAL;
    leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    max = mdays[m - 1] + (m == 2 && leap);
    if (d > max)
        return SX_EINVAL;
    *unix_s = sx_time_days_from_civil(y, m, d) * 86400;
    return SX_OK;
}

int64_t sx_time_day_start(int64_t unix_s)
{
    return floor_div(unix_s, 86400) * 86400;
}
