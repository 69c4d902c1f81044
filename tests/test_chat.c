/*
 * test_chat.c — the Qwen2.5 chat template and tool-call parser
 * (models/qwen2/chat.c).
 *
 * The reference: tests/data/chat/cases.json holds conversations and JSON
 * values; make_expected.py rendered them with the real chat_template.jinja
 * through jinja2 as transformers does, into tests/data/chat/expected/NAME.txt
 * and tojson_expected.json. Each must come out of loom byte for byte.
 * The data folder is $LOOM_TEST_DATA, else LOOM_TEST_DATA_DIR (the source
 * tree's tests/data), plus "/chat".
 */
#include <check.h>

#include "check_main.h"
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"

#ifndef LOOM_TEST_DATA_DIR
#define LOOM_TEST_DATA_DIR "tests/data"
#endif

static char   data_dir[4096];
static cJSON *cases;      /* cases.json, loaded before the tests fork */
static cJSON *tojson_exp; /* tojson_expected.json */

static cJSON *load_json(const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", data_dir, name);
    char *text = loom_test_read_file(path, NULL);
    if (!text) { fprintf(stderr, "test_chat: cannot read %s\n", path); exit(1); }
    cJSON *v = cJSON_Parse(text);
    free(text);
    if (!v) { fprintf(stderr, "test_chat: %s is not JSON\n", path); exit(1); }
    return v;
}

/* Fails with the first differing byte and some context on both sides. */
static void assert_same(const char *name, const char *got, const char *want, size_t want_len)
{
    size_t got_len = strlen(got), i = 0;
    while (i < got_len && i < want_len && got[i] == want[i]) i++;
    if (i == got_len && i == want_len) return;
    size_t from = i > 40 ? i - 40 : 0;
    ck_abort_msg("%s: differs at byte %zu (got %zu bytes, want %zu)\n got:  ...%.80s\n want: ...%.80s",
                 name, i, got_len, want_len, got + from, want + from);
}

/* ---- the reference renderings ------------------------------------------------- */

START_TEST(render_matches_template)
{
    const cJSON *conv = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(cases, "conversations"), _i);
    const char *name = cJSON_GetObjectItemCaseSensitive(conv, "name")->valuestring;
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(conv, "messages");
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(conv, "tools");
    bool agp = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(conv, "add_generation_prompt"));

    size_t n = (size_t)cJSON_GetArraySize(jm);
    loom_chat_msg *msgs = calloc(n, sizeof *msgs);
    for (size_t i = 0; i < n; i++) {
        const cJSON *m = cJSON_GetArrayItem(jm, (int)i);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        msgs[i].role = cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring;
        msgs[i].content = cJSON_IsString(content) ? content->valuestring : NULL;
        msgs[i].tool_calls_json = cJSON_IsString(calls) ? calls->valuestring : NULL;
    }
    char *out = NULL;
    loom_status st = loom_chat_render(msgs, n, cJSON_IsString(tools) ? tools->valuestring : NULL, agp, &out);
    ck_assert_msg(st == LOOM_OK, "%s: render failed: %s", name, loom_last_error());

    char path[4300];
    size_t want_len;
    snprintf(path, sizeof path, "%s/expected/%s.txt", data_dir, name);
    char *want = loom_test_read_file(path, &want_len);
    ck_assert_msg(want != NULL, "cannot read %s", path);
    assert_same(name, out, want, want_len);
    free(want);
    free(out);
    free(msgs);
}
END_TEST

START_TEST(tojson_matches_python)
{
    const char *in = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(cases, "tojson"), _i)->valuestring;
    const char *want = cJSON_GetArrayItem(tojson_exp, _i)->valuestring;
    char *out = NULL;
    ck_assert_msg(loom_chat_tojson(in, &out) == LOOM_OK, "tojson(%s): %s", in, loom_last_error());
    assert_same(in, out, want, strlen(want));
    free(out);
}
END_TEST

/* ---- rendering: small cases written out ------------------------------------------ */

static char *render(const loom_chat_msg *m, size_t n, const char *tools, bool agp)
{
    char *out = NULL;
    loom_status st = loom_chat_render(m, n, tools, agp, &out);
    ck_assert_msg(st == LOOM_OK, "render failed: %s", loom_last_error());
    return out;
}

START_TEST(render_basic)
{
    loom_chat_msg m[] = {{"user", "Hi", NULL}};
    char *out = render(m, 1, NULL, true);
    ck_assert_str_eq(out,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    free(out);

    loom_chat_msg m2[] = {{"system", "S", NULL}, {"user", "U", NULL}, {"assistant", "A", "null"}};
    out = render(m2, 3, "null", false);
    ck_assert_str_eq(out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                          "<|im_start|>assistant\nA<|im_end|>\n");
    free(out);
}
END_TEST

START_TEST(render_tool_round_trip)
{
    /* What the model writes parses back into what renders it again. */
    const char *gen = "Checking.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1.0, \"s\": \"ü\\n\"}}\n"
                      "</tool_call>\n<tool_call>\n{\"name\": \"g\", \"arguments\": {}}\n</tool_call>";
    char *calls, *content;
    ck_assert_int_eq(loom_chat_parse_tool_calls(gen, &calls, &content), LOOM_OK);
    ck_assert_str_eq(content, "Checking.");
    ck_assert_str_eq(calls, "[{\"name\": \"f\", \"arguments\": {\"x\": 1.0, \"s\": \"ü\\n\"}}, "
                            "{\"name\": \"g\", \"arguments\": {}}]");
    loom_chat_msg m[] = {{"user", "q", NULL}, {"assistant", content, calls}};
    char *out = render(m, 2, NULL, false);
    char want[1024];
    snprintf(want, sizeof want, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
             "assistant.<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n%s<|im_end|>\n", gen);
    ck_assert_str_eq(out, want);
    free(out);
    free(calls);
    free(content);
}
END_TEST

/* ---- the tool-call parser ---------------------------------------------------------- */

static void parse_ok(const char *text, const char *want_calls, const char *want_content)
{
    char *calls = (char *)1, *content = (char *)1;
    loom_status st = loom_chat_parse_tool_calls(text, &calls, &content);
    ck_assert_msg(st == LOOM_OK, "parse(%s): %s", text, loom_last_error());
    ck_assert_str_eq(calls, want_calls);
    ck_assert_str_eq(content, want_content);
    free(calls);
    free(content);
}

static void parse_fails(const char *text, loom_status want, const char *msg_part)
{
    char *calls = (char *)1, *content = (char *)1;
    loom_status st = loom_chat_parse_tool_calls(text, &calls, &content);
    ck_assert_msg(st == want, "parse(%s): status %d, want %d (%s)", text, st, want, loom_last_error());
    ck_assert_ptr_null(calls);
    ck_assert_ptr_null(content);
    ck_assert_msg(strstr(loom_last_error(), msg_part), "message \"%s\" lacks \"%s\"", loom_last_error(), msg_part);
}

START_TEST(parse_plain_text)
{
    parse_ok("", "[]", "");
    parse_ok("  Just text.\n", "[]", "  Just text.\n");
    parse_ok("a </tool_call> b", "[]", "a </tool_call> b");
}
END_TEST

START_TEST(parse_calls)
{
    parse_ok("<tool_call>\n{\"name\": \"get\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
             "[{\"name\": \"get\", \"arguments\": {\"city\": \"Paris\"}}]", "");
    /* compact JSON, no arguments, text between and after, unclosed last block */
    parse_ok("A\n<tool_call>{\"arguments\":{\"n\":[1,2e3]},\"name\":\"x\"}</tool_call> mid \n"
             "<tool_call>\n{\"name\": \"y\"}\n</tool_call>\nend\n<tool_call>{\"name\":\"z\",\"arguments\":\"s\"}",
             "[{\"name\": \"x\", \"arguments\": {\"n\": [1, 2000.0]}}, {\"name\": \"y\", \"arguments\": {}}, "
             "{\"name\": \"z\", \"arguments\": \"s\"}]",
             "A\nmid\nend");
}
END_TEST

START_TEST(parse_errors)
{
    parse_fails("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": }}\n</tool_call>", LOOM_ERR_FORMAT, "tool call 1");
    parse_fails("ok <tool_call>{\"name\":\"f\"}</tool_call><tool_call>{\"name\": \"g\",</tool_call>",
                LOOM_ERR_FORMAT, "tool call 2 (at byte 38");
    parse_fails("<tool_call>[1, 2]</tool_call>", LOOM_ERR_FORMAT, "string \"name\"");
    parse_fails("<tool_call>{\"name\": 3}</tool_call>", LOOM_ERR_FORMAT, "string \"name\"");
    parse_fails("<tool_call></tool_call>", LOOM_ERR_FORMAT, "invalid JSON");
    parse_fails("<tool_call>", LOOM_ERR_FORMAT, "invalid JSON");
    parse_fails("<tool_call>{\"name\": \"f\"} trailing</tool_call>", LOOM_ERR_FORMAT, "invalid JSON");
    parse_fails("<tool_call>{\"name\": \"f\", \"arguments\": {\"n\": 01}}</tool_call>", LOOM_ERR_FORMAT, "number \"01\"");
    parse_fails("<tool_call>{\"name\": \"f\\u0000\"}</tool_call>", LOOM_ERR_UNSUPPORTED, "\\u0000");
    ck_assert_int_eq(loom_chat_parse_tool_calls(NULL, &(char *){0}, &(char *){0}), LOOM_ERR_INVALID);
}
END_TEST

/* ---- invalid input to render ---------------------------------------------------------- */

static void render_fails(const loom_chat_msg *m, size_t n, const char *tools, loom_status want, const char *msg_part)
{
    char *out = (char *)1;
    loom_status st = loom_chat_render(m, n, tools, true, &out);
    ck_assert_msg(st == want, "status %d, want %d (%s)", st, want, loom_last_error());
    ck_assert_ptr_null(out);
    ck_assert_msg(strstr(loom_last_error(), msg_part), "message \"%s\" lacks \"%s\"", loom_last_error(), msg_part);
}

START_TEST(render_errors)
{
    loom_chat_msg ok[] = {{"user", "hi", NULL}};
    render_fails(ok, 0, NULL, LOOM_ERR_INVALID, "no messages");
    render_fails(NULL, 1, NULL, LOOM_ERR_INVALID, "no messages");
    render_fails((loom_chat_msg[]){{"user", "a", NULL}, {"developer", "b", NULL}}, 2, NULL,
                 LOOM_ERR_INVALID, "messages[1]: unknown role \"developer\"");
    render_fails((loom_chat_msg[]){{NULL, "a", NULL}}, 1, NULL, LOOM_ERR_INVALID, "unknown role");
    render_fails((loom_chat_msg[]){{"user", "a", "[]"}}, 1, NULL, LOOM_ERR_INVALID, "tool_calls on a user message");
    render_fails(ok, 1, "{\"name\": \"f\"}", LOOM_ERR_INVALID, "tools_json must be a JSON array");
    render_fails(ok, 1, "[{\"name\": \"f\"", LOOM_ERR_FORMAT, "tools_json: invalid JSON");
    render_fails(ok, 1, "[{\"a\": .5}]", LOOM_ERR_FORMAT, "tools_json: invalid JSON");
    render_fails(ok, 1, "[{\"a\": +1}]", LOOM_ERR_FORMAT, "tools_json: invalid JSON");
    render_fails(ok, 1, "[{\"a\": 1.}]", LOOM_ERR_FORMAT, "invalid JSON number \"1.\"");
    render_fails(ok, 1, "[1]\n[2]", LOOM_ERR_FORMAT, "invalid JSON");
    render_fails(ok, 1, "[\"\\u0000\"]", LOOM_ERR_UNSUPPORTED, "\\u0000");
    render_fails((loom_chat_msg[]){{"user", "a", NULL}, {"assistant", NULL, "{\"name\": \"f\"}"}}, 2, NULL,
                 LOOM_ERR_INVALID, "messages[1].tool_calls_json must be a JSON array");
    render_fails((loom_chat_msg[]){{"user", "a", NULL}, {"assistant", NULL, "[{\"name\": \"f\""}}, 2, NULL,
                 LOOM_ERR_FORMAT, "messages[1].tool_calls_json: invalid JSON");
    render_fails((loom_chat_msg[]){{"user", "a", NULL}, {"assistant", NULL, "[\"f\"]"}}, 2, NULL,
                 LOOM_ERR_INVALID, "messages[1].tool_calls[0]: expected an object");
    render_fails((loom_chat_msg[]){{"user", "a", NULL}, {"assistant", NULL, "[{\"function\": null}]"}}, 2, NULL,
                 LOOM_ERR_INVALID, "expected an object");
    render_fails((loom_chat_msg[]){{"user", "a", NULL},
                                   {"assistant", NULL, "[{\"name\": \"f\", \"arguments\": {}}, {\"arguments\": {}}]"}},
                 2, NULL, LOOM_ERR_INVALID, "messages[1].tool_calls[1]: \"name\" must be a string");
    render_fails((loom_chat_msg[]){{"user", "a", NULL}, {"assistant", NULL, "[{\"name\": \"f\"}]"}}, 2, NULL,
                 LOOM_ERR_INVALID, "no \"arguments\"");
    ck_assert_int_eq(loom_chat_render(ok, 1, NULL, true, NULL), LOOM_ERR_INVALID);
}
END_TEST

START_TEST(tojson_errors)
{
    const char *bad[] = {"", "   ", "{", "[1,]", "{\"a\" 1}", "01", "-", "1e", "NaN", "Infinity", "'s'", "[1] x", "tru"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *out = (char *)1;
        ck_assert_msg(loom_chat_tojson(bad[i], &out) == LOOM_ERR_FORMAT, "\"%s\" accepted", bad[i]);
        ck_assert_ptr_null(out);
    }
}
END_TEST

int main(void)
{
    const char *env = getenv("LOOM_TEST_DATA");
    snprintf(data_dir, sizeof data_dir, "%s/chat", env && *env ? env : LOOM_TEST_DATA_DIR);
    cases = load_json("cases.json");
    tojson_exp = load_json("tojson_expected.json");
    int n_conv = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(cases, "conversations"));
    int n_tojson = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(cases, "tojson"));
    if (n_conv == 0 || n_tojson != cJSON_GetArraySize(tojson_exp)) {
        fprintf(stderr, "test_chat: %s/cases.json and tojson_expected.json disagree; rerun make_expected.py\n", data_dir);
        return 1;
    }

    Suite *s = suite_create("chat");
    TCase *tc = tcase_create("reference");
    tcase_add_loop_test(tc, render_matches_template, 0, n_conv);
    tcase_add_loop_test(tc, tojson_matches_python, 0, n_tojson);
    suite_add_tcase(s, tc);
    tc = tcase_create("render");
    tcase_add_test(tc, render_basic);
    tcase_add_test(tc, render_tool_round_trip);
    tcase_add_test(tc, render_errors);
    tcase_add_test(tc, tojson_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("parse");
    tcase_add_test(tc, parse_plain_text);
    tcase_add_test(tc, parse_calls);
    tcase_add_test(tc, parse_errors);
    suite_add_tcase(s, tc);

    int rc = loom_test_run(s);
    cJSON_Delete(cases);
    cJSON_Delete(tojson_exp);
    return rc;
}
