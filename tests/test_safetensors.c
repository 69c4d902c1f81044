/* test_safetensors.c — safetensors reading and writing, hostile headers, config.json. */
#include <check.h>

#include "check_main.h"
#include <stdlib.h>
#include <unistd.h>

#include "checkpoint.h"

/* An in-memory file: 8-byte length, header text, then `data` bytes. */
static uint8_t *make_file(const char *hdr, size_t data, size_t *len)
{
    size_t h = strlen(hdr);
    uint8_t *buf = calloc(1, 8 + h + data);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, hdr, h);
    *len = 8 + h + data;
    return buf;
}

static void expect_bad(const char *hdr, size_t data, const char *needle)
{
    size_t len;
    uint8_t *buf = make_file(hdr, data, &len);
    loom_st *st = (loom_st *)1;
    loom_status rc = loom_st_parse(buf, len, len, "x.safetensors", &st);
    ck_assert_int_ne(rc, LOOM_OK);
    ck_assert_ptr_null(st);
    if (!strstr(loom_last_error(), needle)) ck_abort_msg("'%s' does not mention '%s'", loom_last_error(), needle);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "x.safetensors"));
    free(buf);
}

START_TEST(good_header)
{
    size_t len;
    uint8_t *buf = make_file("{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],"
                             "\"data_offsets\":[0,12]},\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
                             16, &len);
    loom_st *st;
    ck_assert_int_eq(loom_st_parse(buf, len, len, "x.safetensors", &st), LOOM_OK);
    ck_assert_int_eq(loom_st_count(st), 2);
    const loom_st_tensor *t;
    ck_assert_int_eq(loom_st_get(st, "a", LOOM_BF16, 2, (int64_t[]){2, 3}, &t), LOOM_OK);
    ck_assert_uint_eq(t->nbytes, 12);
    ck_assert_int_eq(loom_st_get(st, "a", LOOM_F16, 2, (int64_t[]){2, 3}, &t), LOOM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "expected f16 [2,3]"));
    ck_assert_int_eq(loom_st_get(st, "a", LOOM_BF16, 2, (int64_t[]){3, 2}, &t), LOOM_ERR_FORMAT);
    ck_assert_int_eq(loom_st_get(st, "missing", LOOM_BF16, 1, (int64_t[]){1}, &t), LOOM_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "missing"));
    loom_st_close(st);
    free(buf);
}
END_TEST

START_TEST(hostile_headers)
{
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "outside");   /* data truncated */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}", 16, "needs 16 bytes");
    expect_bad("{\"a\":{\"dtype\":\"Q9\",\"shape\":[4],\"data_offsets\":[0,4]}}", 16, "unknown dtype");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", 16, "dimension");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,16]}}", 16, "overflow");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,4]}}", 16, "outside");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4]}}", 16, "data_offsets");
    expect_bad("[1,2,3]", 0, "JSON object");
    expect_bad("{\"a\":", 0, "JSON object");
}
END_TEST

START_TEST(length_lies)
{
    size_t len;
    uint8_t *buf = make_file("{}", 0, &len);
    buf[0] = 0xff, buf[5] = 0x7f; /* header claims far more than the file */
    loom_st *st;
    ck_assert_int_eq(loom_st_parse(buf, len, len, "x.safetensors", &st), LOOM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "header length"));
    ck_assert_int_eq(loom_st_parse(buf, 4, 4, "x.safetensors", &st), LOOM_ERR_FORMAT); /* shorter than 8 */
    free(buf);
}
END_TEST

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static loom_status fill_pattern(void *ud, int32_t i, void *buf, size_t n)
{
    for (size_t k = 0; k < n; k++) ((uint8_t *)buf)[k] = (uint8_t)(k * 7 + (size_t)i);
    return LOOM_OK;
}

START_TEST(write_then_read)
{
    char dir[] = "/tmp/loom-st-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    loom_st_entry e[2] = {{"w", "F16", 2, {3, 5}}, {"b", "F32", 1, {7}}};
    ck_assert_int_eq(loom_st_write(path, e, 2, fill_pattern, NULL), LOOM_OK);
    loom_st *st;
    ck_assert_int_eq(loom_st_open_dir(dir, &st), LOOM_OK);
    const loom_st_tensor *t;
    ck_assert_int_eq(loom_st_get(st, "b", LOOM_F32, 1, (int64_t[]){7}, &t), LOOM_OK);
    ck_assert_uint_eq(((uintptr_t)t->data) % 4, 0); /* data section is aligned */
    for (size_t k = 0; k < 28; k++) ck_assert_uint_eq(((const uint8_t *)t->data)[k], (uint8_t)(k * 7 + 1));
    loom_st_close(st);
    /* truncate the file: the header now lies about the data */
    ck_assert_int_eq(truncate(path, 60), 0);
    ck_assert_int_eq(loom_st_open_file(path, &st), LOOM_ERR_FORMAT);
    unlink(path);
    rmdir(dir);
}
END_TEST


START_TEST(sharded)
{
    char dir[] = "/tmp/loom-shard-XXXXXX", path[256], index[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    loom_st_entry a = {"a", "F32", 1, {4}}, b = {"b", "BF16", 2, {2, 3}};
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
    ck_assert_int_eq(loom_st_write(path, &a, 1, fill_pattern, NULL), LOOM_OK);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    ck_assert_int_eq(loom_st_write(path, &b, 1, fill_pattern, NULL), LOOM_OK);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    write_text(index, "{\"metadata\":{},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                      "\"b\":\"model-00002-of-00002.safetensors\"}}");
    loom_st *st;
    ck_assert_msg(loom_st_open_dir(dir, &st) == LOOM_OK, "%s", loom_last_error());
    const loom_st_tensor *t;
    ck_assert_int_eq(loom_st_get(st, "a", LOOM_F32, 1, (int64_t[]){4}, &t), LOOM_OK);
    ck_assert_int_eq(loom_st_get(st, "b", LOOM_BF16, 2, (int64_t[]){2, 3}, &t), LOOM_OK);
    ck_assert_ptr_nonnull(strstr(t->file, "00002"));
    loom_st_close(st);
    /* the index names a tensor its shard lacks */
    write_text(index, "{\"weight_map\":{\"a\":\"model-00002-of-00002.safetensors\"}}");
    ck_assert_int_eq(loom_st_open_dir(dir, &st), LOOM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "'a' is not in"));
    /* a shard name that leaves the folder */
    write_text(index, "{\"weight_map\":{\"a\":\"../etc/passwd\"}}");
    ck_assert_int_eq(loom_st_open_dir(dir, &st), LOOM_ERR_FORMAT);
    write_text(index, "{\"weight_map\":{\"a\":\"missing.safetensors\"}}");
    ck_assert_int_eq(loom_st_open_dir(dir, &st), LOOM_ERR_IO);
    unlink(index);
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(config_json)
{
    char dir[] = "/tmp/loom-cfg-XXXXXX", path[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":896,\"intermediate_size\":4864,"
                     "\"num_hidden_layers\":24,\"num_attention_heads\":14,\"num_key_value_heads\":2,\"vocab_size\":151936,"
                     "\"rope_theta\":1000000.0,\"rms_norm_eps\":1e-06,\"tie_word_embeddings\":true,\"dtype\":\"float16\","
                     "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4.0,\"original_max_position_embeddings\":32768},"
                     "\"quantization_config\":{\"bits\":4,\"group_size\":128,\"quant_method\":\"awq\",\"version\":\"gemm\",\"zero_point\":true}}");
    loom_qwen2_config c;
    ck_assert_int_eq(loom_qwen2_config_load(dir, &c), LOOM_OK);
    ck_assert_int_eq(c.head_dim, 64);
    ck_assert_int_eq(c.dtype, LOOM_F16);
    ck_assert(c.tied && c.awq);
    ck_assert_float_eq(c.yarn_factor, 4.0f);
    /* impossible head counts */
    write_text(path, "{\"hidden_size\":896,\"intermediate_size\":4864,\"num_hidden_layers\":2,\"num_attention_heads\":14,"
                     "\"num_key_value_heads\":3,\"vocab_size\":100}");
    ck_assert_int_eq(loom_qwen2_config_load(dir, &c), LOOM_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "num_key_value_heads"));
    write_text(path, "{\"hidden_size\":896,\"num_hidden_layers\":2}");
    ck_assert_int_eq(loom_qwen2_config_load(dir, &c), LOOM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "num_attention_heads"));
    write_text(path, "{\"hidden_size\":\"big\"}");
    ck_assert_int_eq(loom_qwen2_config_load(dir, &c), LOOM_ERR_FORMAT);
    unlink(path);
    rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("safetensors");
    tcase_add_test(tc, good_header);
    tcase_add_test(tc, hostile_headers);
    tcase_add_test(tc, length_lies);
    tcase_add_test(tc, write_then_read);
    tcase_add_test(tc, sharded);
    tcase_add_test(tc, config_json);
    suite_add_tcase(s, tc);
    return loom_test_run(s);
}
