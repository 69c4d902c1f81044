/* test_awq.c — AWQ packing against hand-made words and round trips. */
#include <check.h>

#include "check_main.h"
#include <stdlib.h>

#include "awq.h"

START_TEST(nibble_order_by_hand)
{
    /* K = 128, N = 8: one word per row. Column c holds value c in row 0:
     * nibble i carries column order[i] = {0,2,4,6,1,3,5,7}, so the word is
     * 0x75316420 read from the top nibble down. */
    enum { K = 128, N = 8 };
    uint8_t q[K * N] = {0}, z[N] = {0}, q2[K * N], z2[N];
    uint16_t s[N], s2[N];
    for (int n = 0; n < N; n++) q[n] = (uint8_t)n, z[n] = (uint8_t)(15 - n), s[n] = loom_f32_to_f16(0.5f);
    uint8_t *blob = malloc(loom_awq_nbytes(K, N));
    ck_assert_int_eq(loom_awq_pack(K, N, q, z, s, blob), LOOM_OK);
    loom_awq_view v = loom_awq_view_of(blob, K, N);
    ck_assert_uint_eq(v.qweight[0], 0x75316420u);
    ck_assert_uint_eq(v.qzeros[0], 0x8ace9bdfu); /* 15-order[i] per nibble */
    /* w[0][n] = (n - (15 - n)) * 0.5 */
    for (int n = 0; n < N; n++) ck_assert_float_eq(loom_awq_get(&v, 0, n), (float)(2 * n - 15) * 0.5f);
    ck_assert_int_eq(loom_awq_unpack(K, N, blob, q2, z2, s2), LOOM_OK);
    ck_assert_mem_eq(q, q2, sizeof q);
    ck_assert_mem_eq(z, z2, sizeof z);
    ck_assert_mem_eq(s, s2, sizeof s);
    free(blob);
}
END_TEST

START_TEST(round_trip_random)
{
    enum { K = 256, N = 48 };
    static uint8_t q[K * N], z[K / 128 * N], q2[K * N], z2[K / 128 * N];
    static uint16_t s[K / 128 * N], s2[K / 128 * N];
    srand(3);
    for (int i = 0; i < K * N; i++) q[i] = (uint8_t)(rand() & 15);
    for (int i = 0; i < K / 128 * N; i++) z[i] = (uint8_t)(rand() & 15), s[i] = loom_f32_to_f16((float)(rand() % 100 + 1) / 1000);
    uint8_t *blob = malloc(loom_awq_nbytes(K, N));
    ck_assert_int_eq(loom_awq_pack(K, N, q, z, s, blob), LOOM_OK);
    ck_assert_int_eq(loom_awq_unpack(K, N, blob, q2, z2, s2), LOOM_OK);
    ck_assert_mem_eq(q, q2, sizeof q);
    ck_assert_mem_eq(z, z2, sizeof z);
    loom_awq_view v = loom_awq_view_of(blob, K, N);
    for (int k = 0; k < K; k += 37)
        for (int n = 0; n < N; n++) {
            float want = ((float)q[k * N + n] - z[k / 128 * N + n]) * loom_f16_to_f32(s[k / 128 * N + n]);
            ck_assert_float_eq(loom_awq_get(&v, k, n), want);
        }
    /* join() of the three checkpoint tensors gives the same blob */
    uint8_t *joined = malloc(loom_awq_nbytes(K, N));
    loom_awq_join(K, N, v.qweight, v.qzeros, v.scales, joined);
    ck_assert_mem_eq(blob, joined, loom_awq_nbytes(K, N));
    free(blob), free(joined);
}
END_TEST

START_TEST(bad_shapes_and_values)
{
    uint8_t q[128 * 8] = {0}, z[8] = {0};
    uint16_t s[8] = {0};
    uint8_t blob[1024];
    ck_assert_int_eq(loom_awq_pack(100, 8, q, z, s, blob), LOOM_ERR_INVALID);
    ck_assert_int_eq(loom_awq_pack(128, 12, q, z, s, blob), LOOM_ERR_INVALID);
    q[5] = 16; /* not a nibble */
    ck_assert_int_eq(loom_awq_pack(128, 8, q, z, s, blob), LOOM_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "4-bit"));
}
END_TEST

START_TEST(half_conversions)
{
    ck_assert_uint_eq(loom_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(loom_f32_to_f16(-2.5f), 0xc100);
    ck_assert_uint_eq(loom_f32_to_f16(65520.0f), 0x7c00);        /* overflows to inf */
    ck_assert_uint_eq(loom_f32_to_f16(5.9604645e-8f), 0x0001);   /* smallest subnormal */
    ck_assert_float_eq(loom_f16_to_f32(0x0001), 5.9604645e-8f);
    ck_assert_float_eq(loom_f16_to_f32(0x7bff), 65504.0f);
    ck_assert_uint_eq(loom_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(loom_f32_to_bf16(1.00390625f), 0x3f80);   /* tie rounds to even */
    ck_assert_uint_eq(loom_f32_to_bf16(1.01171875f), 0x3f82);   /* tie rounds to even (up) */
    for (uint32_t h = 0; h < 0x7c00; h++) /* every finite half survives f16 -> f32 -> f16 */
        ck_assert_uint_eq(loom_f32_to_f16(loom_f16_to_f32((uint16_t)h)), h);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("awq");
    TCase *tc = tcase_create("awq");
    tcase_add_test(tc, nibble_order_by_hand);
    tcase_add_test(tc, round_trip_random);
    tcase_add_test(tc, bad_shapes_and_values);
    tcase_add_test(tc, half_conversions);
    suite_add_tcase(s, tc);
    return loom_test_run(s);
}
