"""Opens N client connections to a MySQL-protocol server (plain sockets and the
mysql_native_password handshake, so that thousands open in seconds), checks that one of them
can run a statement, prints `ready N`, holds them all idle until its standard input closes,
then closes them and prints `closed`.

Usage: idle_connections.py PORT N USER PASSWORD
"""
import hashlib
import socket
import struct
import sys


def read_packet(s):
    header = b""
    while len(header) < 4:
        chunk = s.recv(4 - len(header))
        if not chunk:
            raise ConnectionError("closed")
        header += chunk
    n = header[0] | header[1] << 8 | header[2] << 16
    payload = b""
    while len(payload) < n:
        chunk = s.recv(n - len(payload))
        if not chunk:
            raise ConnectionError("closed")
        payload += chunk
    return header[3], payload


def login(port, user, password):
    s = socket.create_connection(("127.0.0.1", port))
    seq, greeting = read_packet(s)
    pos = greeting.index(b"\0", 1) + 1 + 4
    scramble = greeting[pos:pos + 8]
    pos += 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10
    scramble += greeting[pos:pos + 12]
    h1 = hashlib.sha1(password).digest()
    h2 = hashlib.sha1(h1).digest()
    h3 = hashlib.sha1(scramble + h2).digest()
    token = bytes(a ^ b for a, b in zip(h1, h3))
    caps = 0x1 | 0x200 | 0x2000 | 0x8000 | 0x80000
    body = struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23
    body += user + b"\0" + bytes([len(token)]) + token + b"mysql_native_password\0"
    s.sendall(struct.pack("<I", len(body))[:3] + bytes([seq + 1]) + body)
    _, reply = read_packet(s)
    if reply[:1] != b"\0":
        raise RuntimeError(f"login refused: {reply!r}")
    return s


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    user, password = sys.argv[3].encode(), sys.argv[4].encode()
    conns = [login(port, user, password) for _ in range(n)]
    query = b"\x03SELECT 1"
    conns[-1].sendall(struct.pack("<I", len(query))[:3] + b"\0" + query)
    _, first = read_packet(conns[-1])
    assert first == b"\x01", first
    print(f"ready {len(conns)}", flush=True)
    sys.stdin.read()
    for c in conns:
        c.close()
    print("closed", flush=True)


main()
