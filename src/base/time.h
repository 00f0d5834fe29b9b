/* UTC time helpers: wall-clock and monotonic readings, ISO-8601 formatting
 * and strict YYYY-MM-DD parsing. Days are UTC days everywhere in synapsex
 * (quotas, usage periods), so nothing here consults the local time zone. */
#ifndef SX_BASE_TIME_H
#define SX_BASE_TIME_H

#include <stdint.h>

#define SX_TIME_ISO_LEN 24  /* "2026-12-03T18:54:22.123Z" without NUL */
#define SX_TIME_DATE_LEN 10 /* "2026-12-03" without NUL */

/* Wall-clock time since the Unix epoch. */
int64_t sx_time_now_ms(void);
int64_t sx_time_now_s(void);

/* Monotonic clock in nanoseconds, for durations and deadlines only. */
int64_t sx_time_mono_ns(void);

/* Formats a Unix time in milliseconds as "YYYY-MM-DDTHH:MM:SS.mmmZ" into out
 * (at least SX_TIME_ISO_LEN + 1 bytes). */
void sx_time_iso8601_ms(int64_t unix_ms, char out[SX_TIME_ISO_LEN + 1]);

/* Formats Unix seconds as "YYYY-MM-DDTHH:MM:SSZ" (21 bytes with NUL). */
void sx_time_iso8601(int64_t unix_s, char out[21]);

/* Formats the UTC day containing unix_s as "YYYY-MM-DD". */
void sx_time_format_date(int64_t unix_s, char out[SX_TIME_DATE_LEN + 1]);

/* Parses exactly "YYYY-MM-DD" (a real calendar date, years 1970-9999) and
 * stores the Unix time of that day's 00:00:00 UTC. Returns 0, or SX_EINVAL
 * for anything else (extra characters, 2026-02-30, ...). */
int sx_time_parse_date(const char *s, int64_t *unix_s);

/* Start (00:00:00 UTC) of the day containing unix_s. */
int64_t sx_time_day_start(int64_t unix_s);

/* Days since 1970-01-01 for a proleptic Gregorian date, and back. */
int64_t sx_time_days_from_civil(int y, int m, int d);
void sx_time_civil_from_days(int64_t days, int *y, int *m, int *d);

#endif
