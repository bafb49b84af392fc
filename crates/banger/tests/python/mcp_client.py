"""Drives `banger mcp` with the official MCP Python SDK (a client banger did not write).

Usage: mcp_client.py sandbox BANGER IMAGE WORKSPACE_DIR  (one VM: the whole workflow)
       mcp_client.py errors BANGER                        (no VM: refused calls)
The server inherits this process's environment (the test's banger installation). Prints
one JSON summary on stdout; the Rust test (tests/mcp.rs) asserts on it. Any protocol
failure raises, failing the test.
"""

import asyncio
import json
import os
import sys
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

TOOLS = [
    "sandbox_create",
    "sandbox_exec",
    "sandbox_read_file",
    "sandbox_write_file",
    "sandbox_diff",
    "sandbox_list_dir",
    "sandbox_list",
    "sandbox_show",
    "sandbox_delete",
]


def text_of(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def call(session, name, args):
    """A tool call that must succeed: its structured content."""
    result = await session.call_tool(name, args)
    if result.is_error:
        raise RuntimeError(f"{name} {args} failed: {text_of(result)}")
    return result.structured_content


def server(banger):
    return StdioServerParameters(command=banger, args=["mcp"], env=dict(os.environ))


async def refusal(session, name, args):
    """A call that must be refused: as a tool error, or as a JSON-RPC error."""
    try:
        result = await session.call_tool(name, args)
    except Exception as e:
        return {"is_error": True, "text": str(e), "jsonrpc": True}
    return {"is_error": bool(result.is_error), "text": text_of(result), "jsonrpc": False}


async def errors(banger):
    summary = {}
    async with stdio_client(server(banger)) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            summary["first_list"] = await call(session, "sandbox_list", {})
            summary["bad_name"] = await refusal(session, "sandbox_create", {"name": "Bad Name"})
            summary["missing_workspace"] = await refusal(
                session, "sandbox_create", {"workspace": "/nonexistent/dir"}
            )
            summary["argv_and_command"] = await refusal(
                session, "sandbox_exec", {"sandbox": "x", "argv": ["ls"], "command": "ls"}
            )
            summary["zero_timeout"] = await refusal(
                session, "sandbox_exec", {"sandbox": "x", "command": "ls", "timeout_secs": 0}
            )
            summary["setuid"] = await refusal(
                session, "sandbox_write_file", {"sandbox": "x", "path": "/a", "content": "", "mode": "4755"}
            )
            summary["huge_read"] = await refusal(
                session, "sandbox_read_file", {"sandbox": "x", "path": "/a", "max_bytes": 1 << 40}
            )
            summary["unknown_field"] = await refusal(session, "sandbox_show", {"sandbox": "x", "vm": "x"})
            summary["unknown_tool"] = await refusal(session, "sandbox_frobnicate", {})
            summary["delete_missing"] = await refusal(session, "sandbox_delete", {"sandbox": "ghost"})
            summary["last_list"] = await call(session, "sandbox_list", {})
    print(json.dumps(summary))


async def sandbox(banger, image, workspace):
    summary = {}
    params = StdioServerParameters(command=banger, args=["mcp"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            summary["server_name"] = init.server_info.name
            tools = (await session.list_tools()).tools
            summary["tools"] = sorted(t.name for t in tools)
            summary["schemas_are_objects"] = all(
                t.input_schema.get("type") == "object" for t in tools
            )
            summary["exec_schema_has_timeout"] = "timeout_secs" in next(
                t for t in tools if t.name == "sandbox_exec"
            ).input_schema.get("properties", {})

            created = await call(
                session, "sandbox_create", {"image": image, "workspace": workspace}
            )
            vm = created["name"]
            summary["created"] = created

            listing = await call(session, "sandbox_exec", {
                "sandbox": vm, "argv": ["cat", "hello.txt"], "cwd": created["workspace"],
            })
            summary["workspace_file"] = listing["stdout"]

            unchanged = await call(session, "sandbox_diff", {"sandbox": vm})
            summary["diff_before"] = {"empty": unchanged["empty"], "patch": unchanged["patch"]["text"]}
            await call(session, "sandbox_exec", {
                "sandbox": vm, "command": "echo changed >> hello.txt", "cwd": created["workspace"],
            })
            await call(session, "sandbox_write_file", {
                "sandbox": vm, "path": created["workspace"] + "/new.txt", "content": "brand new\n",
            })
            changed = await call(session, "sandbox_diff", {"sandbox": vm})
            summary["diff_after"] = {"empty": changed["empty"], "patch": changed["patch"]["text"]}
            stat = await call(session, "sandbox_diff", {"sandbox": vm, "stat": True})
            summary["diff_stat"] = stat["patch"]["text"]

            ran = await call(session, "sandbox_exec", {
                "sandbox": vm, "command": "echo out; echo err >&2; exit 3",
            })
            summary["exec"] = {k: ran[k] for k in ("exit_code", "stdout", "stderr", "timed_out")}

            piped = await call(session, "sandbox_exec", {
                "sandbox": vm, "command": "tr a-z A-Z; echo \"$GREETING\"", "stdin": "shout\n",
                "env": {"GREETING": "hello there"},
            })
            summary["stdin_stdout"] = piped["stdout"]

            await call(session, "sandbox_write_file", {
                "sandbox": vm, "path": "/root/notes/a.sh", "content": "#!/bin/sh\necho written\n",
                "mode": "755",
            })
            read_back = await call(session, "sandbox_read_file", {
                "sandbox": vm, "path": "/root/notes/a.sh",
            })
            summary["read_back"] = {k: read_back[k] for k in ("content", "mode", "size")}
            ran_written = await call(session, "sandbox_exec", {
                "sandbox": vm, "argv": ["/root/notes/a.sh"],
            })
            summary["ran_written"] = ran_written["stdout"]
            entries = await call(session, "sandbox_list_dir", {"sandbox": vm, "path": "/root"})
            summary["root_entries"] = sorted(
                (e["name"], e["type"]) for e in entries["entries"]
            )
            binary = await session.call_tool("sandbox_read_file", {
                "sandbox": vm, "path": "/bin/sh",
            })
            summary["binary_read"] = {"is_error": binary.is_error, "text": text_of(binary)}

            started = time.monotonic()
            slow = await call(session, "sandbox_exec", {
                "sandbox": vm, "command": "sleep 30; echo late", "timeout_secs": 2,
            })
            summary["timeout"] = {
                "timed_out": slow["timed_out"],
                "exit_code": slow["exit_code"],
                "stdout": slow["stdout"],
                "note": slow.get("note", ""),
                "seconds": time.monotonic() - started,
            }
            # The whole process group goes, the shell's `sleep` child too: wait (bounded)
            # until no sleep runs in the guest.
            count_sleeps = "for p in /proc/[0-9]*; do cat $p/comm 2>/dev/null; done | grep -cx sleep"
            deadline = time.monotonic() + 10
            while True:
                left = await call(session, "sandbox_exec", {"sandbox": vm, "command": count_sleeps})
                if left["stdout"].strip() == "0" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            summary["timeout"]["sleeps_left"] = left["stdout"].strip()

            big = await call(session, "sandbox_exec", {
                "sandbox": vm, "command": "head -c 10000000 /dev/zero | tr '\\0' a",
            })
            summary["big"] = {
                "exit_code": big["exit_code"],
                "stdout_bytes": big["stdout_bytes"],
                "stdout_truncated": big["stdout_truncated"],
                "kept_a": len(big["stdout"]) - len(big["stdout"].lstrip("a")),
                "tail": big["stdout"][-80:],
            }

            missing = await session.call_tool("sandbox_exec", {
                "sandbox": "no-such-sandbox", "argv": ["true"],
            })
            summary["missing_sandbox"] = {"is_error": missing.is_error, "text": text_of(missing)}
            try:
                wrong = await session.call_tool("sandbox_exec", {"sandbox": vm, "argv": "ls"})
                summary["wrong_type"] = {"is_error": wrong.is_error, "text": text_of(wrong)}
            except Exception as e:  # a JSON-RPC invalid-params error is also a refusal
                summary["wrong_type"] = {"is_error": True, "text": str(e)}
            after = await call(session, "sandbox_exec", {"sandbox": vm, "argv": ["echo", "still"]})
            summary["after_errors"] = after["stdout"]

            listed = await call(session, "sandbox_list", {})
            summary["listed"] = [s["name"] for s in listed["sandboxes"]]
            shown = await call(session, "sandbox_show", {"sandbox": vm})
            summary["shown_state"] = shown["state"]
            deleted = await call(session, "sandbox_delete", {"sandbox": vm})
            summary["deleted"] = deleted["deleted"]
            summary["vm"] = vm
    print(json.dumps(summary))


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    asyncio.run({"sandbox": sandbox, "errors": errors}[mode](*rest))
