"""Drives `banger serve` with the official E2B Python SDK (a client banger did not write).

Usage: e2b_client.py TEMPLATE sandbox   (two sandboxes, A and B: the whole workflow)
       e2b_client.py TEMPLATE errors    (no sandbox boots: unknown ids, a bad template, keys)
Environment: E2B_API_URL and E2B_SANDBOX_URL (both http://127.0.0.1:PORT), E2B_API_KEY.
Only the SDK talks to the server, except the raw-HTTP error cases (http.client). Prints one
JSON summary on stdout, also when a step fails unexpectedly (then with `fatal` and exit
status 1); the Rust test (tests/e2b.rs) asserts on it. Every sandbox this script creates
is killed before it exits, whatever happened.
"""

import asyncio
import hashlib
import importlib.metadata
import http.client
import json
import os
import struct
import sys
import time
import traceback
from datetime import datetime, timezone
from urllib.parse import urlparse

import e2b
from e2b import Sandbox

# Long enough for the whole run: only B's set_timeout shortens a sandbox's life.
SANDBOX_TIMEOUT = 600
BIG = 20 * 1024 * 1024


def exc(e):
    """An exception as the summary shows it: the SDK's class, its bases that matter, text."""
    return {
        "exception": type(e).__name__,
        "not_found": isinstance(e, e2b.NotFoundException),
        "auth": isinstance(e, e2b.AuthenticationException),
        "sandbox_exception": isinstance(e, e2b.SandboxException),
        "message": str(e),
    }


def attempt(fn):
    """`{"ok": value}` or the exception, for steps whose failure is itself a result."""
    try:
        return {"ok": fn()}
    except Exception as e:  # the SDK's exceptions are the point here
        return exc(e)


def result(r):
    return {"stdout": r.stdout, "stderr": r.stderr, "exit_code": r.exit_code, "error": r.error}


def waited(handle):
    """What `handle.wait()` gives: the result, or the exception with the command's fields."""
    try:
        return {"returned": result(handle.wait())}
    except e2b.CommandExitException as e:
        return {**exc(e), **result(e)}
    except Exception as e:
        return exc(e)


def until(what, fn, timeout):
    """Polls fn() until it returns something truthy: (value, seconds); raises at the deadline."""
    started = time.monotonic()
    while True:
        value = fn()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(0.25)


def listed():
    """Every sandbox `Sandbox.list()` shows, all pages: id → the fields the test checks."""
    paginator = Sandbox.list()
    items = []
    while paginator.has_next:
        items.extend(paginator.next_items())
    return {
        s.sandbox_id: {
            "template_id": s.template_id,
            "state": s.state.value if hasattr(s.state, "value") else s.state,
            "metadata": s.metadata,
            "envd_version": s.envd_version,
            "cpu_count": s.cpu_count,
            "memory_mb": s.memory_mb,
            "end_after_start": s.end_at > s.started_at,
        }
        for s in items
    }


def server():
    url = urlparse(os.environ["E2B_API_URL"])
    return url.hostname, url.port


def raw(method, path, headers=None, body=None):
    """One request outside the SDK: status, content type and the body (JSON when it is)."""
    conn = http.client.HTTPConnection(*server(), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
    except OSError as e:  # a hang or a dropped connection is a result too
        return {"status": None, "transport_error": f"{type(e).__name__}: {e}"}
    finally:
        conn.close()
    ctype = resp.getheader("Content-Type", "")
    out = {"status": resp.status, "content_type": ctype}
    if ctype.startswith("application/connect+"):
        frames = []
        while len(data) >= 5:
            flags, n = struct.unpack(">BI", data[:5])
            frames.append({"flags": flags, "message": json.loads(data[5 : 5 + n] or b"null")})
            data = data[5 + n :]
        out["frames"] = frames
        out["trailing_bytes"] = len(data)
    else:
        try:
            out["json"] = json.loads(data)
        except ValueError:
            out["text"] = data.decode("utf-8", "replace")
    return out


def connect_error(resp):
    """The Connect error a raw response carries (end-of-stream frame or error body)."""
    for f in resp.get("frames", []):
        if f["flags"] & 2 and isinstance(f["message"], dict) and "error" in f["message"]:
            return f["message"]["error"]
    body = resp.get("json")
    if isinstance(body, dict) and "code" in body:
        return body
    return None


def malformed_start(sbx, body):
    headers = {
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
        "E2b-Sandbox-Id": sbx.sandbox_id,
        "E2b-Sandbox-Port": "49983",
    }
    token = sbx._envd_access_token  # what the SDK itself sends as X-Access-Token
    if token:
        headers["X-Access-Token"] = token
    resp = raw("POST", "/process.Process/Start", headers, body)
    resp["error"] = connect_error(resp)
    return resp


def timed_create(**kwargs):
    started = time.monotonic()
    sbx = Sandbox.create(**kwargs)
    created = time.monotonic() - started
    first = sbx.commands.run("echo first")
    return sbx, {
        "create_s": round(created, 3),
        "first_command_s": round(time.monotonic() - started - created, 3),
        "first_stdout": first.stdout,
    }


def count_sleeps(sbx):
    out = sbx.commands.run(
        "for p in /proc/[0-9]*; do cat $p/comm 2>/dev/null; done | grep -cx sleep || true"
    )
    return out.stdout.strip()


def files_round(sbx, s):
    """files.* on A, relative and absolute paths; the commands see the same files."""
    f = sbx.files
    w = f.write("notes/hello.txt", "hello file\n")
    s["write_relative"] = {"name": w.name, "path": w.path, "type": w.type.value if w.type else None}
    s["read_relative"] = f.read("notes/hello.txt")
    s["read_absolute"] = f.read(w.path)
    s["cat_relative"] = sbx.commands.run("cat notes/hello.txt").stdout
    wa = f.write("/tmp/e2b-abs/deep/x.txt", b"absolute\n")
    s["write_absolute"] = {"name": wa.name, "path": wa.path}
    s["read_absolute_bytes"] = f.read("/tmp/e2b-abs/deep/x.txt", format="bytes").decode()
    s["make_dir_new"] = f.make_dir("notes/sub")
    s["make_dir_again"] = f.make_dir("notes/sub")
    s["make_dir_absolute"] = f.make_dir("/tmp/e2b-abs/made")
    s["list_relative"] = sorted(
        [e.name, e.type.value if e.type else None, e.path, e.size] for e in f.list("notes")
    )
    s["list_absolute"] = sorted(
        [e.name, e.type.value if e.type else None] for e in f.list("/tmp/e2b-abs")
    )
    s["exists"] = {
        "file": f.exists("notes/hello.txt"),
        "dir": f.exists("notes/sub"),
        "absolute": f.exists("/tmp/e2b-abs/deep/x.txt"),
        "missing": f.exists("notes/missing.txt"),
    }
    f.remove("notes/hello.txt")
    f.remove("/tmp/e2b-abs")
    s["exists_after_remove"] = {
        "file": f.exists("notes/hello.txt"),
        "absolute_tree": f.exists("/tmp/e2b-abs/deep/x.txt"),
        "dir_kept": f.exists("notes/sub"),
    }
    f.write("mv-src.txt", "moved\n")
    moved = f.rename("mv-src.txt", "moved/dst.txt")
    s["rename"] = {
        "path": moved.path,
        "content": f.read("moved/dst.txt"),
        "source_left": f.exists("mv-src.txt"),
    }
    s["read_missing"] = attempt(lambda: f.read("notes/hello.txt"))
    s["remove_missing"] = attempt(lambda: f.remove("notes/hello.txt"))


def pty_round(sbx):
    from e2b import PtySize

    h = sbx.pty.create(PtySize(rows=24, cols=80), timeout=60)
    # The shared stream of the handle's events: read up to a marker, act, read on.
    events = iter(h)
    text = ""

    def read_until(marker):
        nonlocal text
        while marker not in text:
            _, _, chunk = next(events)
            if chunk:
                text += bytes(chunk).decode("utf-8", "replace")

    sbx.pty.send_stdin(h.pid, b"stty size; tty; echo pty-$((6*7))\n")
    read_until("pty-42\r\n")
    sbx.pty.resize(h.pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(h.pid, b"stty size; exit 5\n")
    after = []
    try:
        h.wait(on_pty=lambda chunk: after.append(bytes(chunk)))
        ended = {"exit_code": 0}
    except e2b.CommandExitException as e:
        ended = {"exit_code": e.exit_code}
    later = b"".join(after).decode("utf-8", "replace")
    return {
        **ended,
        "sized": "24 80" in text,
        "on_a_tty": "/dev/pts/" in text,
        "echoed": "pty-42" in text,
        "resized": "30 100" in later,
        "tail": (text + later)[-400:],
    }


def watch_round(sbx):
    f = sbx.files
    f.make_dir("watched/sub")
    out = {}
    handle = f.watch_dir("watched", recursive=True)
    f.write("watched/sub/deep.txt", "deep\n")
    seen = []

    def deep_seen():
        seen.extend((e.name, e.type.name) for e in handle.get_new_events())
        return any(name == "sub/deep.txt" for name, _ in seen)

    _, out["polled_after_s"] = until("the watcher to see sub/deep.txt", deep_seen, 30)
    out["polled"] = sorted(set(seen))
    handle.stop()
    out["events_after_stop"] = attempt(lambda: handle.get_new_events() and "events")

    async def streamed():
        from e2b import AsyncSandbox

        asbx = await AsyncSandbox.connect(sbx.sandbox_id)
        got = asyncio.Queue()
        watcher = await asbx.files.watch_dir("watched", on_event=lambda e: got.put_nowait(e), timeout=60)
        await asbx.files.write("watched/streamed.txt", "s\n")
        events = []
        try:
            while not any(e.name == "streamed.txt" for e in events):
                events.append(await asyncio.wait_for(got.get(), 30))
        finally:
            await watcher.stop()
        return sorted({(e.name, e.type.name) for e in events})

    out["streamed"] = attempt(lambda: asyncio.run(streamed()))
    return out


def big_round(sbx):
    """20 MB both ways: host → guest (write, checked in the guest and read back) and
    guest → host (made in the guest, read)."""
    data = os.urandom(BIG)
    want = hashlib.sha256(data).hexdigest()
    started = time.monotonic()
    sbx.files.write("/tmp/big-up.bin", data)
    write_s = time.monotonic() - started
    guest_up = sbx.commands.run("sha256sum /tmp/big-up.bin; stat -c %s /tmp/big-up.bin").stdout.split()
    started = time.monotonic()
    back = sbx.files.read("/tmp/big-up.bin", format="bytes")
    read_s = time.monotonic() - started
    sbx.commands.run("head -c %d /dev/urandom > /tmp/big-down.bin" % BIG)
    guest_down = sbx.commands.run("sha256sum /tmp/big-down.bin").stdout.split()[0]
    down = sbx.files.read("/tmp/big-down.bin", format="bytes")
    return {
        "sent_sha256": want,
        "guest_sha256": guest_up[0],
        "guest_size": int(guest_up[2]),
        "read_back_sha256": hashlib.sha256(back).hexdigest(),
        "read_back_size": len(back),
        "guest_made_sha256": guest_down,
        "guest_made_read_sha256": hashlib.sha256(down).hexdigest(),
        "guest_made_read_size": len(down),
        "write_s": round(write_s, 3),
        "read_s": round(read_s, 3),
    }


def sandbox(template, summary):
    created = summary["_created"]
    a, summary["timing_a"] = timed_create(
        template=template, timeout=SANDBOX_TIMEOUT, metadata={"suite": "e2b", "role": "a"}
    )
    created.append(a.sandbox_id)
    b, summary["timing_b"] = timed_create(
        template=template, timeout=SANDBOX_TIMEOUT, metadata={"suite": "e2b", "role": "b"}
    )
    created.append(b.sandbox_id)
    summary["a"], summary["b"] = a.sandbox_id, b.sandbox_id

    # Commands.
    summary["echo"] = result(a.commands.run("echo hi"))
    try:
        r = a.commands.run("echo bad >&2; exit 3")
        summary["failing"] = {"returned": result(r)}
    except e2b.CommandExitException as e:
        summary["failing"] = {**exc(e), **result(e)}
    summary["env_cwd"] = result(
        a.commands.run('echo "$GREETING"; pwd', envs={"GREETING": "hello there"}, cwd="/tmp")
    )
    summary["identity"] = result(a.commands.run('whoami; echo "$HOME"; pwd'))

    bg = a.commands.run("sleep 600", background=True)
    summary["background"] = {"pid_positive": bg.pid > 0, "kill": bg.kill()}
    summary["background"]["wait"] = waited(bg)
    summary["background"]["sleeps_left"], _ = until(
        "the killed sleep to go", lambda: count_sleeps(a) == "0" and "0", 30
    )
    summary["background"]["kill_again"] = attempt(lambda: a.commands.kill(bg.pid))

    cat = a.commands.run("cat", background=True, stdin=True, timeout=60)
    a.commands.send_stdin(cat.pid, "hello\n")
    a.commands.send_stdin(cat.pid, b"bytes too\n")
    stdin = {"has_close_stdin": hasattr(a.commands, "close_stdin")}
    if stdin["has_close_stdin"]:
        stdin["close"] = attempt(lambda: a.commands.close_stdin(cat.pid) or "closed")
    if stdin.get("close", {}).get("ok") != "closed":
        stdin["killed_instead"] = cat.kill()
    stdin["wait"] = waited(cat)
    # The client-streamed way in: StreamInput, then EOF.
    streamed = a.commands.run("cat", background=True, stdin=True, timeout=60)
    stdin["stream_input"] = attempt(
        lambda: a.commands.stream_input(streamed.pid, ["one\n", b"two\n"]) or "sent"
    )
    a.commands.close_stdin(streamed.pid)
    stdin["streamed_wait"] = waited(streamed)
    summary["stdin"] = stdin

    # A command's timeout ends it (envd kills the process at Connect-Timeout-Ms).
    timed = {"run": attempt(lambda: a.commands.run("sleep 45", timeout=2))}
    timed["sleeps_left"], timed["gone_after_s"] = until(
        "the timed-out sleep to be killed", lambda: count_sleeps(a) == "0" and "0", 30
    )
    timed["gone_after_s"] = round(timed["gone_after_s"], 2)
    summary["timeout_kill"] = timed

    # commands.list sees a running command; commands.connect follows it.
    follow = a.commands.run("sleep 600", background=True, timeout=0)
    procs = a.commands.list()
    again = a.commands.connect(follow.pid, timeout=0)
    summary["processes"] = {
        "listed": [
            {"pid_matches": p.pid == follow.pid, "cmd": p.cmd, "args": p.args}
            for p in procs
            if p.pid == follow.pid
        ],
        "kill": follow.kill(),
        "connected_wait": waited(again),
    }

    # Metrics: the guest's memory and CPU, the disks as the host sees them.
    def metrics():
        m = a.get_metrics()[-1]
        return {
            "count": len(a.get_metrics()),
            "cpu_count": m.cpu_count,
            "cpu_pct_in_range": 0.0 <= m.cpu_used_pct <= 100.0,
            "mem_total_mib": m.mem_total >> 20,
            "mem_used_below_total": 0 < m.mem_used < m.mem_total,
            "disk_used_below_total": 0 < m.disk_used < m.disk_total,
        }

    summary["metrics"] = attempt(metrics)
    # An unknown guest user is the caller's mistake, not an unreachable sandbox.
    summary["unknown_user_write"] = attempt(
        lambda: a.files.write("u.txt", "x\n", user="nosuchuser").path
    )

    # A pty: an interactive login shell, typed at, resized, its output a terminal's.
    summary["pty"] = pty_round(a)

    # Watching a directory: the sync SDK's polled watcher (recursive) and the async SDK's
    # WatchDir stream, each seeing a file appear.
    summary["watch"] = watch_round(a)

    # Files.
    files = {}
    files_round(a, files)
    summary["files"] = files
    summary["big"] = big_round(a)

    # The guest is hostile: root replaces `find` with an endless printer. A listing is
    # refused at its bound, at once, and the server serves on.
    a.commands.run(
        "printf '#!/bin/sh\\nexec cat /dev/zero\\n' > /usr/local/bin/find && chmod 755 /usr/local/bin/find"
    )
    started = time.monotonic()
    hostile = {"list": attempt(lambda: a.files.list("/tmp"))}
    hostile["list_s"] = round(time.monotonic() - started, 2)
    a.commands.run("rm /usr/local/bin/find")
    a.files.write("/tmp/after-hostile/x.txt", "x\n")
    hostile["after"] = attempt(lambda: sorted(e.name for e in a.files.list("/tmp/after-hostile")))
    summary["hostile_find"] = hostile

    # Both at once, kept apart.
    a.files.write("/tmp/only-in-a.txt", "a\n")
    b.files.write("/tmp/only-in-b.txt", "b\n")
    summary["apart"] = {
        "a_sees_a": a.files.exists("/tmp/only-in-a.txt"),
        "b_sees_a": b.files.exists("/tmp/only-in-a.txt"),
        "a_sees_b": a.files.exists("/tmp/only-in-b.txt"),
        "b_sees_b": b.files.exists("/tmp/only-in-b.txt"),
        "b_shell_sees_a": b.commands.run("test -e /tmp/only-in-a.txt && echo yes || echo no").stdout,
        "boot_ids_differ": a.commands.run("cat /proc/sys/kernel/random/boot_id").stdout
        != b.commands.run("cat /proc/sys/kernel/random/boot_id").stdout,
    }
    summary["list"] = listed()
    info = a.get_info()
    summary["info_a"] = {
        "sandbox_id": info.sandbox_id,
        "template_id": info.template_id,
        "state": info.state.value if hasattr(info.state, "value") else info.state,
        "metadata": info.metadata,
        "envd_version": info.envd_version,
        "lifetime_s": round((info.end_at - info.started_at).total_seconds()),
        "cpu_count": info.cpu_count,
    }
    summary["is_running_a"] = a.is_running()

    # B: a short timeout, then its expiry (waited for on the server's state).
    expiry = {}
    b.set_timeout(5)
    set_at = time.monotonic()
    b_info = b.get_info()
    expiry["ends_in_s"] = round((b_info.end_at - datetime.now(timezone.utc)).total_seconds())
    expiry["gone_from_list_s"] = round(
        until("B to leave Sandbox.list()", lambda: b.sandbox_id not in listed(), 90)[1], 1
    )
    expiry["after_set_s"] = round(time.monotonic() - set_at, 1)
    expiry["get_info"] = attempt(lambda: Sandbox.get_info(b.sandbox_id) and "still there")
    expiry["run"] = attempt(lambda: b.commands.run("echo zombie").stdout)
    expiry["kill"] = attempt(lambda: Sandbox.kill(b.sandbox_id))
    summary["expiry"] = expiry

    # Malformed Connect bodies on A's envd, then A still serves.
    summary["malformed"] = {
        # Length prefixes past the data (by one, by 254), JSON that is not, a cut prefix.
        "prefix_one_past": malformed_start(a, b"\x00\x00\x00\x00\x05{bad"),
        "bad_json": malformed_start(a, b"\x00\x00\x00\x00\x04{bad"),
        "prefix_far_past": malformed_start(a, b"\x00\x00\x00\x01\x00{}"),
        "no_envelope": malformed_start(a, b"\x00\x00"),
        "bad_unary": raw(
            "POST",
            "/filesystem.Filesystem/Stat",
            {
                "Content-Type": "application/json",
                "Connect-Protocol-Version": "1",
                "E2b-Sandbox-Id": a.sandbox_id,
                "E2b-Sandbox-Port": "49983",
                **({"X-Access-Token": a._envd_access_token} if a._envd_access_token else {}),
            },
            b"{bad",
        ),
        "wrong_token": raw(
            "POST",
            "/filesystem.Filesystem/Stat",
            {
                "Content-Type": "application/json",
                "E2b-Sandbox-Id": a.sandbox_id,
                "E2b-Sandbox-Port": "49983",
                "X-Access-Token": "not-the-token",
            },
            b'{"path":"/"}',
        ),
    }
    summary["after_malformed"] = a.commands.run("echo still").stdout

    # Pause, then connect (which resumes) and run: whatever this setup gives.
    pause = {"pause": attempt(lambda: a.pause())}
    if "ok" in pause["pause"]:
        pause["listed_state"] = listed().get(a.sandbox_id, {}).get("state")
        pause["pause_again"] = attempt(lambda: Sandbox.pause(a.sandbox_id))
    started = time.monotonic()
    try:
        again = Sandbox.connect(a.sandbox_id)
        pause["connect_s"] = round(time.monotonic() - started, 3)
        pause["connect"] = {"sandbox_id": again.sandbox_id}
        pause["run"] = attempt(lambda: again.commands.run("echo resumed").stdout)
        pause["file_kept"] = attempt(lambda: again.files.read("/tmp/only-in-a.txt"))
        pause["listed_state_after"] = listed().get(a.sandbox_id, {}).get("state")
    except Exception as e:
        pause["connect"] = exc(e)
    summary["pause"] = pause

    # A: killed, then gone for every call.
    killed = {"kill": a.kill()}
    killed["kill_again"] = Sandbox.kill(a.sandbox_id)
    killed["run"] = attempt(lambda: a.commands.run("echo after").stdout)
    killed["get_info"] = attempt(lambda: Sandbox.get_info(a.sandbox_id) and "still there")
    killed["connect"] = attempt(lambda: Sandbox.connect(a.sandbox_id) and "connected")
    killed["listed"] = a.sandbox_id in listed()
    summary["killed"] = killed
    summary["list_after"] = listed()


def errors(template, summary):
    summary["unknown"] = {
        "connect": attempt(lambda: Sandbox.connect("nope") and "connected"),
        "kill": attempt(lambda: Sandbox.kill("nope")),
        "get_info": attempt(lambda: Sandbox.get_info("nope") and "found"),
        "set_timeout": attempt(lambda: Sandbox.set_timeout("nope", 30) or "set"),
        "pause": attempt(lambda: Sandbox.pause("nope")),
    }
    started = time.monotonic()
    summary["bad_template"] = attempt(
        lambda: summary["_created"].append(Sandbox.create(template="no-such-image", timeout=60).sandbox_id)
    )
    summary["bad_template_s"] = round(time.monotonic() - started, 3)
    summary["no_key"] = raw("GET", "/v2/sandboxes")
    summary["wrong_key"] = raw("GET", "/v2/sandboxes", {"X-API-KEY": "wrong-" + os.environ["E2B_API_KEY"]})
    summary["wrong_key_create"] = raw(
        "POST",
        "/v2/sandboxes",
        {"X-API-KEY": "wrong", "Content-Type": "application/json"},
        json.dumps({"templateID": template}).encode(),
    )
    summary["sdk_wrong_key_list"] = attempt(lambda: Sandbox.list(api_key="wrong").next_items() and "listed")
    summary["sdk_wrong_key_create"] = attempt(
        lambda: summary["_created"].append(Sandbox.create(template=template, api_key="wrong").sandbox_id)
    )
    summary["sdk_wrong_key_kill"] = attempt(lambda: Sandbox.kill("nope", api_key="wrong"))
    # No envd for a sandbox that does not exist: the SDK's own request, by hand.
    summary["envd_unknown"] = raw(
        "POST",
        "/process.Process/Start",
        {"Content-Type": "application/connect+json", "E2b-Sandbox-Id": "nope", "E2b-Sandbox-Port": "49983"},
        struct.pack(">BI", 0, 2) + b"{}",
    )
    summary["unknown_route"] = raw("GET", "/no/such/route", {"X-API-KEY": os.environ["E2B_API_KEY"]})
    summary["still_serving"] = listed()


def reference(template, summary):
    """A template that is an image reference: pulled on the first create, reused after. The
    second sandbox pauses at its timeout (`lifecycle.on_timeout = "pause"`) instead of dying,
    and connect resumes it."""
    for round_ in ("first", "second"):
        started = time.monotonic()
        # The first create pulls and converts the image before it boots: more than the
        # SDK's default 60 s request timeout on a loaded machine.
        lifecycle = {"on_timeout": "pause"} if round_ == "second" else None
        sbx = Sandbox.create(template=template, timeout=120, lifecycle=lifecycle, request_timeout=600)
        summary["_created"].append(sbx.sandbox_id)
        r = summary[round_] = {
            "create_s": round(time.monotonic() - started, 3),
            "template_id": Sandbox.get_info(sbx.sandbox_id).template_id,
            "run": sbx.commands.run("cat /etc/debian_version >/dev/null && echo pulled").stdout,
        }
        if lifecycle:
            sbx.commands.run("echo kept > /tmp/kept")
            sbx.set_timeout(3)
            state = lambda: Sandbox.get_info(sbx.sandbox_id).state  # noqa: E731
            r["state_at_timeout"], r["paused_after_s"] = until(
                "the sandbox to pause at its timeout",
                lambda: (s := state()) and getattr(s, "value", s) == "paused" and "paused",
                60,
            )
            back = Sandbox.connect(sbx.sandbox_id, timeout=120)
            r["after_connect"] = back.commands.run("cat /tmp/kept").stdout
        r["kill"] = sbx.kill()


def keyless(template, summary):
    """A server with no key configured, on loopback: any key, or none, is let in."""
    summary["no_key"] = raw("GET", "/v2/sandboxes")["status"]
    summary["sdk_list"] = attempt(lambda: len(Sandbox.list(api_key="anything").next_items()))


if __name__ == "__main__":
    template, mode = sys.argv[1], sys.argv[2]
    summary = {"sdk_version": importlib.metadata.version("e2b"), "_created": []}
    status = 0
    try:
        {"sandbox": sandbox, "errors": errors, "reference": reference, "keyless": keyless}[mode](
            template, summary
        )
    except Exception:
        summary["fatal"] = traceback.format_exc()
        status = 1
    finally:
        # Whatever happened, no sandbox of ours outlives the script.
        summary["cleanup"] = {
            sid: attempt(lambda sid=sid: Sandbox.kill(sid)) for sid in summary.pop("_created")
        }
    print(json.dumps(summary, default=str))
    sys.exit(status)
