/* Tests of base/time: calendar conversion at known dates, ISO-8601
 * formatting, strict YYYY-MM-DD parsing, day starts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "base/time.h"

static void test_format(void **state)
{
    char iso[SX_TIME_ISO_LEN + 1], s[21], d[SX_TIME_DATE_LEN + 1];

    (void)state;
    sx_time_iso8601_ms(0, iso);
    assert_string_equal(iso, "1970-01-01T00:00:00.000Z");
    /* date -u -d @1709164800 -> 2024-02-29 00:00:00 (a leap day) */
    sx_time_iso8601_ms(1709164800123LL, iso);
    assert_string_equal(iso, "2024-02-29T00:00:00.123Z");
    sx_time_iso8601(1798761599, s);
    assert_string_equal(s, "2026-12-31T23:59:59Z");
    sx_time_format_date(1798761599, d);
    assert_string_equal(d, "2026-12-31");
}

static void test_parse_date(void **state)
{
    int64_t t;

    (void)state;
    assert_int_equal(sx_time_parse_date("2024-02-29", &t), 0);
    assert_int_equal(t, 1709164800);
    assert_int_equal(sx_time_parse_date("1970-01-01", &t), 0);
    assert_int_equal(t, 0);
    assert_int_equal(sx_time_parse_date("2000-02-29", &t), 0); /* 400-year leap */
    assert_int_equal(sx_time_parse_date("2100-02-29", &t), SX_EINVAL);
    assert_int_equal(sx_time_parse_date("2023-02-29", &t), SX_EINVAL);
    assert_int_equal(sx_time_parse_date("2026-04-31", &t), SX_EINVAL);
    assert_int_equal(sx_time_parse_date("2026-13-01", &t), SX_EINVAL);
    assert_int_equal(sx_time_parse_date("2026-1-01", &t), SX_EINVAL);
    assert_int_equal(sx_time_parse_date("2026-01-01T", &t), SX_EINVAL);
    assert_int_equal(sx_time_parse_date("", &t), SX_EINVAL);
    assert_int_equal(sx_time_parse_date(NULL, &t), SX_EINVAL);
}

static void test_roundtrip_days(void **state)
{
    (void)state;
    for (int64_t day = -1000; day < 200000; day += 7) {
        int y, m, d;

        sx_time_civil_from_days(day, &y, &m, &d);
        assert_int_equal(sx_time_days_from_civil(y, m, d), day);
    }
    assert_int_equal(sx_time_day_start(1709164800 + 86399), 1709164800);
    assert_int_equal(sx_time_day_start(-1), -86400);
}

static void test_clocks(void **state)
{
    int64_t a = sx_time_mono_ns(), b = sx_time_mono_ns();

    (void)state;
    assert_true(b >= a);
    assert_true(sx_time_now_ms() / 1000 - sx_time_now_s() <= 1);
    assert_true(sx_time_now_s() > 1700000000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_parse_date),
        cmocka_unit_test(test_roundtrip_days),
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
