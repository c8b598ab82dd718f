"""A minimal IMAP4rev1 server for the mail-intake tests (this module holds no tests).

Debian's dovecot is not installed on the test machines, so the IMAP polling test
talks to this instead: a real TLS socket on 127.0.0.1 and the real ``imaplib``
client, with just the commands the intake uses — CAPABILITY, LOGIN, SELECT,
UID SEARCH (ALL/UNSEEN), UID FETCH (BODY.PEEK[] with a partial range, FLAGS),
UID STORE (+FLAGS), EXPUNGE, NOOP, LOGOUT.  Literals are sent as RFC 3501 says
(``{n}\\r\\n`` then n bytes), which is the part of IMAP a client most often gets
wrong.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
from dataclasses import dataclass, field

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\([^)]*\)|\S+')
_PARTIAL = re.compile(r"BODY\.PEEK\[\]<(\d+)\.(\d+)>", re.IGNORECASE)


def _unquote(token: str) -> str:
    if token.startswith('"') and token.endswith('"'):
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    return token


@dataclass
class Message:
    uid: int
    data: bytes
    flags: set[str] = field(default_factory=set)


@dataclass
class Mailbox:
    """One folder; ``messages`` in UID order."""

    messages: list[Message] = field(default_factory=list)
    next_uid: int = 1

    def append(self, data: bytes, flags: set[str] | None = None) -> int:
        uid = self.next_uid
        self.next_uid += 1
        self.messages.append(Message(uid, data, set(flags or ())))
        return uid

    def by_uid(self, uid: int) -> tuple[int, Message] | None:
        for seq, msg in enumerate(self.messages, start=1):
            if msg.uid == uid:
                return seq, msg
        return None


class ImapServer:
    """Serves ``mailboxes`` to one user over implicit TLS; run it with ``with``."""

    def __init__(self, *, user: str, password: str, tls: ssl.SSLContext | None) -> None:
        self.user, self.password, self.tls = user, password, tls
        self.mailboxes: dict[str, Mailbox] = {"INBOX": Mailbox()}
        self.commands: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.lock = threading.Lock()

    def __enter__(self) -> ImapServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.tls),
            self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(line: str | bytes) -> None:
            writer.write((line.encode() if isinstance(line, str) else line) + b"\r\n")

        send("* OK IMAP4rev1 test server ready")
        authed = False
        box: Mailbox | None = None
        try:
            while line := await reader.readline():
                text = line.decode().rstrip("\r\n")
                tag, _, rest = text.partition(" ")
                tokens = _TOKEN.findall(rest)
                if not tokens:
                    send(f"{tag} BAD empty command")
                    continue
                cmd = tokens[0].upper()
                args = tokens[1:]
                self.commands.append(cmd if cmd != "UID" else f"UID {args[0].upper()}")
                with self.lock:
                    if cmd == "CAPABILITY":
                        send("* CAPABILITY IMAP4rev1 AUTH=PLAIN")
                        send(f"{tag} OK CAPABILITY completed")
                    elif cmd == "NOOP":
                        send(f"{tag} OK NOOP completed")
                    elif cmd == "LOGIN":
                        if [_unquote(a) for a in args] == [self.user, self.password]:
                            authed = True
                            send(f"{tag} OK LOGIN completed")
                        else:
                            send(f"{tag} NO [AUTHENTICATIONFAILED] invalid credentials")
                    elif cmd == "LOGOUT":
                        send("* BYE logging out")
                        send(f"{tag} OK LOGOUT completed")
                        await writer.drain()
                        break
                    elif not authed:
                        send(f"{tag} NO not logged in")
                    elif cmd in ("SELECT", "EXAMINE"):
                        box = self.mailboxes.get(_unquote(args[0]))
                        if box is None:
                            send(f"{tag} NO [NONEXISTENT] no such mailbox")
                            continue
                        send("* FLAGS (\\Seen \\Deleted \\Flagged)")
                        send(f"* {len(box.messages)} EXISTS")
                        send("* 0 RECENT")
                        send("* OK [UIDVALIDITY 1] UIDs valid")
                        send(f"* OK [UIDNEXT {box.next_uid}] next UID")
                        send(f"{tag} OK [READ-WRITE] SELECT completed")
                    elif box is None:
                        send(f"{tag} BAD no mailbox selected")
                    elif cmd == "UID":
                        self._uid(tag, args, box, send)
                    elif cmd == "EXPUNGE":
                        for seq in range(len(box.messages), 0, -1):
                            if "\\Deleted" in box.messages[seq - 1].flags:
                                del box.messages[seq - 1]
                                send(f"* {seq} EXPUNGE")
                        send(f"{tag} OK EXPUNGE completed")
                    else:
                        send(f"{tag} BAD unknown command")
                await writer.drain()
        finally:
            writer.close()

    def _uid(self, tag: str, args: list[str], box: Mailbox, send) -> None:
        sub = args[0].upper()
        if sub == "SEARCH":
            tests = {"ALL": lambda m: True,
                     "UNSEEN": lambda m: "\\Seen" not in m.flags,
                     "UNDELETED": lambda m: "\\Deleted" not in m.flags}
            criteria = [c.upper() for c in args[1:]]
            if any(c not in tests for c in criteria):
                send(f"{tag} BAD unsupported search criteria")
                return
            hits = [m.uid for m in box.messages if all(tests[c](m) for c in criteria)]
            send("* SEARCH" + "".join(f" {u}" for u in hits))
            send(f"{tag} OK SEARCH completed")
            return
        found = box.by_uid(int(args[1]))
        if found is None:
            send(f"{tag} OK nothing matched")
            return
        seq, msg = found
        if sub == "FETCH":
            what = " ".join(args[2:])
            partial = _PARTIAL.search(what)
            if partial:
                start, count = int(partial[1]), int(partial[2])
                data = msg.data[start:start + count]
                send(f"* {seq} FETCH (UID {msg.uid} BODY[]<{start}> {{{len(data)}}}".encode()
                     + b"\r\n" + data + b")")
            elif "FLAGS" in what.upper():
                send(f"* {seq} FETCH (UID {msg.uid} FLAGS ({' '.join(sorted(msg.flags))}))")
            send(f"{tag} OK FETCH completed")
        elif sub == "STORE":
            mode, flags = args[2].upper(), args[3].strip("()").split()
            if mode.startswith("+FLAGS"):
                msg.flags |= set(flags)
            elif mode.startswith("-FLAGS"):
                msg.flags -= set(flags)
            send(f"* {seq} FETCH (UID {msg.uid} FLAGS ({' '.join(sorted(msg.flags))}))")
            send(f"{tag} OK STORE completed")
        else:
            send(f"{tag} BAD unsupported UID command")
