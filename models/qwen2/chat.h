/*
 * chat.h — the Qwen2.5 chat template (ChatML with tool calling), in C.
 *
 * loom_chat_render produces, byte for byte, what the chat_template.jinja that
 * ships with Qwen2.5-*-Instruct renders through transformers'
 * apply_chat_template (tests/data/chat/make_expected.py holds the reference
 * renderer; tests/test_chat.c compares). It is this one template, not a Jinja
 * engine:
 *
 *   <|im_start|>system\n SYSTEM [tools block] <|im_end|>\n     always first;
 *       SYSTEM is messages[0].content when that is a system message, else
 *       "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
 *   <|im_start|>ROLE\n CONTENT <|im_end|>\n                    user, assistant,
 *       and system messages after the first
 *   <|im_start|>assistant[\n CONTENT]{\n<tool_call>\n{"name": N, "arguments": A}\n</tool_call>}<|im_end|>\n
 *   <|im_start|>user{\n<tool_response>\n CONTENT \n</tool_response>}<|im_end|>\n
 *       one turn for each run of consecutive tool messages
 *   <|im_start|>assistant\n                                      add_generation_prompt
 *
 * JSON that the template passes through its `tojson` filter (each tool
 * signature, each call's arguments) is re-serialised exactly as Python's
 * json.dumps(x, ensure_ascii=False) writes the value json.loads read:
 *   - separators ", " and ": ", no newlines, keys in the given order; a key
 *     repeated in one object keeps its first position and its last value;
 *   - strings: \" \\ \b \f \n \r \t, other bytes below 0x20 as \u00xx
 *     (lower-case hex); everything else, "/" and non-ASCII included, raw;
 *   - integers (no '.', 'e' or 'E') exactly as written, any size ("-0" -> "0");
 *     other numbers as Python's float repr: shortest round-trip digits,
 *     "1.0", "0.0001", "1e-05", "1e+16", "1.2345678901234568e+17", "-0.0";
 *     out of range -> "Infinity" / "-Infinity".
 * Input JSON is strict RFC 8259 except that raw control characters inside
 * strings are accepted; "\u0000" in a string is refused (LOOM_ERR_UNSUPPORTED).
 *
 * Where loom differs from the template (documented choices):
 *   - a tool call whose "arguments" is a string holding valid JSON (what
 *     OpenAI clients send) is rendered as the decoded value, as vLLM's server
 *     does before rendering; other strings are rendered as JSON strings;
 *   - NULL content renders as "" (the template would fail, or print "None");
 *   - invalid input is an error where the template silently renders something
 *     odd: a role other than system/user/assistant/tool, tool_calls on a
 *     non-assistant message, a call without a string "name" or without
 *     "arguments".
 * Text is passed through as bytes: invalid UTF-8 is not checked here (the
 * tokenizer refuses it).
 */
#ifndef LOOM_CHAT_H
#define LOOM_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "loom.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_chat_msg {
    const char *role;            /* "system" | "user" | "assistant" | "tool" */
    const char *content;         /* UTF-8 text; NULL is "" */
    const char *tool_calls_json; /* assistant only, else NULL: a JSON array of
                                    {"name": ..., "arguments": ...} or, as
                                    OpenAI sends, {"type": "function", "function":
                                    {"name": ..., "arguments": "<json text>"}};
                                    NULL, "null" or "[]": no calls */
} loom_chat_msg;

/* Renders n >= 1 messages into a malloc'd, 0-terminated prompt (*out; the
 * caller frees it). tools_json: NULL, "null", or a JSON array of tool
 * signatures (each rendered as given, e.g. OpenAI's {"type": "function",
 * "function": {...}}); an empty array means no tools block.
 * LOOM_ERR_INVALID names the message and what is wrong with it. */
loom_status loom_chat_render(const loom_chat_msg *msgs, size_t n, const char *tools_json,
                             bool add_generation_prompt, char **out);

/* Splits model output into tool calls and text. Every <tool_call>...</tool_call>
 * block (a final unclosed <tool_call> runs to the end of the text) must hold a
 * JSON object with a string "name" and optional "arguments" (default {}).
 *   *calls_json: malloc'd JSON array [{"name": ..., "arguments": ...}, ...]
 *                in the json.dumps form above; "[]" when there is none;
 *   *content:    malloc'd text outside the blocks: the text itself when there
 *                is no block; otherwise the pieces between blocks with the
 *                whitespace next to each block removed, empty pieces dropped,
 *                joined by "\n" (so "Sure.\n<tool_call>...</tool_call>" gives
 *                "Sure.", which renders back to the same text).
 * A block that is not such an object is LOOM_ERR_FORMAT naming the block and
 * the byte; both outputs are then NULL. */
loom_status loom_chat_parse_tool_calls(const char *text, char **calls_json, char **content);

/* One JSON value re-serialised as the template's tojson filter writes it (the
 * rules above) into a malloc'd string. LOOM_ERR_FORMAT for invalid JSON. */
loom_status loom_chat_tojson(const char *json, char **out);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_CHAT_H */
