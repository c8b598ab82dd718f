"""``fleetroom-agent enroll``: make this agent's keys here and register them with a token.

The private keys are generated on this machine and never leave it; the server
learns the public halves and a *proof of possession* (the new signing key signs
the token and both public keys, :func:`fleetroom_protocol.keys.enroll_proof_message`),
so a token intercepted in transit cannot be used to register somebody else's key
under a copied request.

Order of work, so that nothing is lost on a failure:

1. an existing identity is refused (before the token is spent) unless ``--force``;
2. keys are generated and the request is sent over the same TLS rules as every
   later message (TLS ≥ 1.2, ``--ca-file``, ``--pin``, ``--proxy``);
3. only a complete, valid answer is stored (atomically, mode 0600).  With
   ``--force`` the old identity is kept next to it as
   ``identity.json.replaced-<UTC time>`` — its keys may still be needed to read
   what the old enrollment was sent.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.metadata
import os
import platform
import socket
import time
from pathlib import Path
from typing import Final

import httpx
from fleetroom_protocol.keys import encode_key, enroll_proof_message
from fleetroom_protocol.messages import PATH_ENROLL, EnrollRequest, EnrollResponse
from nacl.public import PrivateKey
from nacl.signing import SigningKey
from pydantic import ValidationError

from fleetroom_agent.identity import (
    DATA_DIR_ENV,
    AgentIdentity,
    IdentityError,
    check_private_file,
    write_private_file,
)
from fleetroom_agent.transports.https import (
    host_port,
    json_error_text,
    make_client,
    normalise_server_url,
    translate_error,
)
from fleetroom_agent.transports.tls import build_ssl_context

TOKEN_ENV: Final = "FLEETROOM_ENROLL_TOKEN"  # noqa: S105 (a variable name, not a secret)
_MAX_RESPONSE_BYTES: Final = 1_000_000


class EnrollError(RuntimeError):
    """Enrollment did not happen; ``code`` says why (for scripts and tests).

    Codes: ``exists``, ``config``, ``network``, ``timeout``, ``tls``, ``pin``,
    ``refused`` (the server said no: bad, spent or expired token…), ``protocol``.
    """

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def agent_version() -> str:
    """The installed agent version (sent at enrollment, shown in the server UI)."""
    try:
        return importlib.metadata.version("fleetroom-agent")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def make_request(token: str, signing_key: SigningKey,
                 encryption_key: PrivateKey) -> EnrollRequest:
    """The enrollment request with its proof of possession."""
    sk, ek = encode_key(signing_key.verify_key), encode_key(encryption_key.public_key)
    proof = signing_key.sign(enroll_proof_message(token, sk, ek)).signature
    return EnrollRequest(token=token, signing_key=sk, encryption_key=ek,
                         proof=base64.b64encode(proof).decode("ascii"),
                         hostname=socket.gethostname()[:255], version=agent_version(),
                         platform=platform.platform()[:128])


def _server_error(response_body: bytes, content_type: str) -> str:
    """The server's own words from a JSON error, else the start of the body."""
    text = json_error_text(response_body, content_type)
    if text is None:
        text = response_body[:300].decode("utf-8", "replace").strip()
    return text or "(no explanation given)"


async def enroll(server_url: str, token: str, data_dir: str | os.PathLike[str], *,
                 ca_file: str | Path | None = None, pins: tuple[str, ...] = (),
                 proxy: str | None = None, force: bool = False,
                 timeout_s: float = 30.0) -> AgentIdentity:
    """Register with the server and store the identity; :class:`EnrollError` on failure."""
    directory = Path(data_dir)
    if AgentIdentity.exists(directory) and not force:
        detail = ""
        try:
            old = AgentIdentity.load(directory)
            detail = f" as agent {old.agent_id} of {old.server_url}"
        except IdentityError:
            detail = " (the file cannot be read)"
        raise EnrollError("exists", f"{AgentIdentity.path_in(directory)} exists: this agent "
                          f"is already enrolled{detail}. Use --force to replace it.")
    token = token.strip()
    try:
        url = normalise_server_url(server_url)
        ctx = build_ssl_context(ca_file=ca_file, pins=pins)
    except ValueError as exc:
        raise EnrollError("config", str(exc)) from None
    if not 8 <= len(token) <= 200:
        raise EnrollError("config", "the token must be 8 to 200 characters (copy it whole)")
    signing_key, encryption_key = SigningKey.generate(), PrivateKey.generate()
    request = make_request(token, signing_key, encryption_key)
    target = httpx.URL(url + PATH_ENROLL)
    host = host_port(target)
    async with make_client(ctx, proxy=proxy, connect_timeout_s=min(timeout_s, 15.0),
                           io_timeout_s=timeout_s, user_agent=f"fleetroom-agent/"
                           f"{agent_version()}") as client:
        try:
            response = await client.post(target, content=request.model_dump_json(),
                                         headers={"content-type": "application/json",
                                                  "accept": "application/json"})
        except httpx.HTTPError as exc:
            err = translate_error(exc, host)
            raise EnrollError(err.code, f"cannot enroll: {err.message}") from None
    body = response.content[:_MAX_RESPONSE_BYTES]
    if response.status_code in {301, 302, 303, 307, 308}:
        raise EnrollError("protocol", f"cannot enroll: {host} redirects to "
                          f"{response.headers.get('location', '?')}; use that URL as --server")
    if response.status_code not in {200, 201}:
        raise EnrollError("refused", f"enrollment refused by {host} (HTTP "
                          f"{response.status_code}): "
                          f"{_server_error(body, response.headers.get('content-type', ''))}",
                          status=response.status_code)
    try:
        answer = EnrollResponse.model_validate_json(body)
        identity = AgentIdentity.from_enrollment(
            answer, server_url=url, signing_key=signing_key, encryption_key=encryption_key,
            ca_file=str(Path(ca_file).resolve()) if ca_file else None, pins=tuple(pins),
            proxy=proxy)
    except (ValidationError, IdentityError) as exc:
        raise EnrollError("protocol", f"the server's answer is not a valid enrollment "
                          f"response ({type(exc).__name__}); nothing was stored") from None
    return _store(identity, directory, force=force)


def _store(identity: AgentIdentity, directory: Path, *, force: bool) -> AgentIdentity:
    path = AgentIdentity.path_in(directory)
    if path.exists():
        if not force:  # someone enrolled concurrently: do not clobber
            raise EnrollError("exists", f"{path} appeared while enrolling; not overwritten")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        backup = path.with_name(f"{path.name}.replaced-{stamp}")
        write_private_file(backup, path.read_bytes())
    return identity.save(directory)


def enroll_cli(server: str, token: str | None, data_dir: Path | None, ca_file: Path | None,
               pins: list[str] | None, proxy: str | None, force: bool) -> int:
    """The ``enroll`` command: returns the exit status, messages on stderr/stdout."""
    from rich.console import Console
    from rich.markup import escape

    out, err = Console(), Console(stderr=True, soft_wrap=True)
    token = token or os.environ.get(TOKEN_ENV, "")
    if data_dir is None:
        # No silent default (as for 'run'): an identity in a directory 'run' does not
        # read would look like an agent that was never enrolled.
        err.print(f"[red]error:[/] give --data-dir or set {DATA_DIR_ENV}")
        return 2
    data_dir = data_dir.expanduser().resolve()
    if not token:
        err.print(f"[red]error:[/] give --token or set {TOKEN_ENV}")
        return 2
    try:
        identity = asyncio.run(enroll(server, token, data_dir, ca_file=ca_file,
                                      pins=tuple(pins or ()), proxy=proxy, force=force))
    except EnrollError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        return 1 if exc.code in {"refused", "network", "timeout", "tls", "pin"} else 2
    path = AgentIdentity.path_in(data_dir)
    check_private_file(path)
    out.print(escape(f"enrolled as agent {identity.agent_id} (tenant {identity.tenant}"
                     + (f", site {identity.site}" if identity.site else "")
                     + f"); identity stored in {path} (mode 0600)"), highlight=False)
    return 0
