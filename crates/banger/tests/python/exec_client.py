#!/usr/bin/env python3
"""A bangerd client written from docs/api.md alone, with Python's standard library only.

Usage: exec_client.py SOCKET IMAGE

Creates a VM of IMAGE, runs a command through the `vm.exec` stream with stdin, checks its
stdout, stderr and exit code, checks that a malformed frame is refused, deletes the VM,
and prints a JSON summary. Exits non-zero (with the reason on stderr) when anything is
not as the documentation says.
"""

import json
import socket
import struct
import sys
import traceback

STDIN, STDOUT, STDERR, STDIN_EOF, CONTROL = 0, 1, 2, 3, 4
MAX_PAYLOAD = 1 << 20
EXEC_UPGRADE = "banger-exec/2"
TIMEOUT = 300


def connect(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect(path)
    return sock


def send_request(sock, method, params, headers):
    body = json.dumps(params).encode()
    head = [
        f"POST /v1/{method} HTTP/1.1",
        "Host: banger",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ] + [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)


def read_head(sock):
    """The status, the headers (lower-case names) and the bytes read past the head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed inside the response head: {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def dechunk(data):
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += data[:size]
        data = data[size + 2:]


def call(sock_path, method, params):
    """A plain call: (HTTP status, the JSON body)."""
    sock = connect(sock_path)
    try:
        send_request(sock, method, params, {"Connection": "close"})
        status, headers, body = read_head(sock)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    finally:
        sock.close()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = dechunk(body)
    return status, json.loads(body)


def ok(sock_path, method, params):
    status, body = call(sock_path, method, params)
    if status != 200:
        raise RuntimeError(f"{method}: HTTP {status}: {body}")
    return body


class Frames:
    """Reads frames: a type byte, a 4-byte big-endian length, the payload."""

    def __init__(self, sock, buffered):
        self.sock = sock
        self.buf = buffered

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def next(self):
        if not self._fill(5):
            if self.buf:
                raise RuntimeError("connection closed inside a frame")
            return None
        ftype, length = struct.unpack(">BI", self.buf[:5])
        if length > MAX_PAYLOAD:
            raise RuntimeError(f"frame of {length} bytes exceeds the limit")
        if not self._fill(5 + length):
            raise RuntimeError("connection closed inside a frame")
        payload = self.buf[5:5 + length]
        self.buf = self.buf[5 + length:]
        return ftype, payload


def frame(ftype, payload=b""):
    return struct.pack(">BI", ftype, len(payload)) + payload


def control(msg):
    return frame(CONTROL, json.dumps(msg).encode())


def open_exec(sock_path, params, token=EXEC_UPGRADE):
    """Upgrades a connection for `vm.exec`: (socket, Frames) or raises with the answer."""
    sock = connect(sock_path)
    send_request(sock, "vm.exec", params, {"Connection": "Upgrade", "Upgrade": token})
    status, headers, rest = read_head(sock)
    if status != 101:
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        sock.close()
        raise HttpError(status, rest)
    if headers.get("upgrade", "").lower() != token:
        raise RuntimeError(f"switched to {headers.get('upgrade')!r}, not {token}")
    return sock, Frames(sock, rest)


class HttpError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.body = body


def run(sock_path, vm, argv, stdin):
    """Runs argv with stdin: {stdout, stderr, started_pid, end} where end is the last
    control message (exit or error)."""
    sock, frames = open_exec(sock_path, {"vm": vm, "argv": argv})
    try:
        try:
            for i in range(0, len(stdin), 65536):
                sock.sendall(frame(STDIN, stdin[i:i + 65536]))
            sock.sendall(frame(STDIN_EOF))
        except (BrokenPipeError, ConnectionResetError):
            # The command ended (or never started) and the daemon closed the connection
            # after its last message: that message is still there to read.
            pass
        out = {"stdout": b"", "stderr": b"", "started_pid": None, "end": None}
        while out["end"] is None:
            got = frames.next()
            if got is None:
                raise RuntimeError("the connection closed before exit or error")
            ftype, payload = got
            if ftype == STDOUT:
                out["stdout"] += payload
            elif ftype == STDERR:
                out["stderr"] += payload
            elif ftype == CONTROL:
                msg = json.loads(payload)
                if msg["type"] == "started":
                    out["started_pid"] = msg["pid"]
                elif msg["type"] in ("exit", "error"):
                    out["end"] = msg
            else:
                raise RuntimeError(f"unexpected frame type {ftype}")
        # Nothing may follow the last message. The daemon may close while stdin frames it
        # no longer reads are in flight, which the kernel turns into a reset instead of a
        # clean end: after the last message, either is the end of the stream.
        try:
            after = frames.next()
        except ConnectionResetError:
            after = None
        if after is not None:
            raise RuntimeError("a frame after the last message")
        return out
    finally:
        sock.close()


def bad_frame_is_refused(sock_path, vm):
    """A frame type the daemon does not know ends the exec with error `bad_frame`."""
    sock, frames = open_exec(sock_path, {"vm": vm, "argv": ["cat"]})
    try:
        sock.sendall(frame(9, b"?"))
        while True:
            got = frames.next()
            if got is None:
                raise RuntimeError("closed without an error message")
            ftype, payload = got
            if ftype == CONTROL and json.loads(payload)["type"] in ("exit", "error"):
                return json.loads(payload)
    finally:
        sock.close()


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    sock_path, image = sys.argv[1], sys.argv[2]
    check(ok(sock_path, "ping", {})["ok"] is True, "ping")
    vm = ok(sock_path, "vm.create", {"image": image, "cpus": 1, "net": "none"})
    check(vm["state"] == "running", f"created VM is {vm['state']}")
    name = vm["name"]
    summary = {"vm": name}
    try:
        got = run(sock_path, name, ["sh", "-c", "echo hi; echo err >&2; cat; exit 3"], b"in\n")
        check(got["stdout"] == b"hi\nin\n", f"stdout {got['stdout']!r}")
        check(got["stderr"] == b"err\n", f"stderr {got['stderr']!r}")
        check(got["end"] == {"type": "exit", "code": 3}, f"end {got['end']}")
        check(isinstance(got["started_pid"], int), "a started message with the pid")
        summary.update(stdout=got["stdout"].decode(), stderr=got["stderr"].decode(),
                       exit=got["end"])

        missing = run(sock_path, name, ["/nonexistent-program"], b"")
        check(missing["end"].get("code") == "command_not_found", f"missing: {missing['end']}")
        summary["missing_program"] = missing["end"]["code"]

        bad = bad_frame_is_refused(sock_path, name)
        check(bad.get("code") == "bad_frame", f"bad frame: {bad}")
        summary["bad_frame"] = bad["code"]

        try:
            open_exec(sock_path, {"vm": name, "argv": ["true"]}, token="banger-exec")
            raise AssertionError("an old Upgrade token was accepted")
        except HttpError as e:
            check(e.status == 400, f"old token: {e}")
            check(json.loads(e.body)["error"]["code"] == "bad_request", f"old token: {e}")
        summary["old_token"] = "bad_request"
    finally:
        deleted = ok(sock_path, "vm.delete", {"vm": name, "force": True})
        summary["deleted"] = deleted["name"]
    status, body = call(sock_path, "vm.show", {"vm": name})
    check(status == 404 and body["error"]["code"] == "not_found", f"after delete: {status} {body}")
    print(json.dumps(summary))


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001 - report any failure as the test's reason
        traceback.print_exc()
        sys.exit(1)
