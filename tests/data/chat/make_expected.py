#!/usr/bin/env python3
"""Expected renderings of the Qwen2.5 chat template for tests/test_chat.c.

Reads cases.json (beside this script) and writes, beside it:
  expected/<name>.txt   the template's output for each conversation, byte for byte
  tojson_expected.json  json.dumps of each "tojson" input, as the template's filter does

The template is the one Qwen2.5-7B-Instruct ships: chat_template.jinja beside
this script, a copy of ../shared/data/qwen2-tokenizer/chat_template.jinja (or
the path given as argv[1]). It is
rendered the way transformers' apply_chat_template does
(transformers.utils.chat_template_utils._compile_jinja_template):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loopcontrols),
a `tojson` filter = json.dumps(x, ensure_ascii=False, indent=None,
separators=None, sort_keys=False), and raise_exception.

Inputs in cases.json hold JSON *texts* ("tools", a message's "tool_calls") so
that the C side reads exactly the same bytes; here they go through json.loads.
One step is applied before rendering, as loom (and vLLM's OpenAI server) does:
a tool call whose "arguments" is a string holding valid JSON gets the decoded
value (OpenAI clients send arguments as a JSON string; the template expects an
object). A null "content" is rendered as "" (what loom does; the template
itself would fail or print "None").

Needs only jinja2 (pip install jinja2). Run: python3 tests/data/chat/make_expected.py
"""
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "chat_template.jinja")


def compile_template(src):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(src)


def decode_arguments(call):
    fn = call["function"] if isinstance(call.get("function"), dict) else call
    if isinstance(fn.get("arguments"), str):
        try:
            fn["arguments"] = json.loads(fn["arguments"])
        except ValueError:
            pass  # not JSON: rendered as a JSON string, as the template does


def to_messages(case):
    out = []
    for m in case["messages"]:
        msg = {"role": m["role"], "content": m["content"] if m["content"] is not None else ""}
        if m.get("tool_calls") is not None:
            calls = json.loads(m["tool_calls"])
            for c in calls:
                decode_arguments(c)
            msg["tool_calls"] = calls
        out.append(msg)
    return out


def main():
    with open(TEMPLATE, encoding="utf-8") as f:
        tpl = compile_template(f.read())
    with open(os.path.join(HERE, "cases.json"), encoding="utf-8") as f:
        spec = json.load(f)
    os.makedirs(os.path.join(HERE, "expected"), exist_ok=True)
    for case in spec["conversations"]:
        kw = {"messages": to_messages(case),
              "add_generation_prompt": case["add_generation_prompt"],
              # what transformers passes besides; the template uses none of them
              "bos_token": None, "eos_token": "<|im_end|>"}
        if "tools" in case:
            kw["tools"] = json.loads(case["tools"])
        text = tpl.render(**kw)
        with open(os.path.join(HERE, "expected", case["name"] + ".txt"), "w",
                  encoding="utf-8", newline="") as f:
            f.write(text)
    dumped = [json.dumps(json.loads(s), ensure_ascii=False) for s in spec["tojson"]]
    with open(os.path.join(HERE, "tojson_expected.json"), "w", encoding="utf-8") as f:
        json.dump(dumped, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(spec['conversations'])} conversations, {len(dumped)} tojson cases")


if __name__ == "__main__":
    main()
