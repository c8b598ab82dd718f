"""One server for the chaos tests (its zygote migrates once; kills and restarts are cheap).

Tests stay independent by using their own agent (own enrollment, own journal, own
device serials); the checks filter by agent.  Every chaos test carries
``pytest.mark.xdist_group("chaos")`` so ``pytest -n 2 --dist loadgroup`` runs them on one
worker and the server is set up once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.chaos_agent import AgentHost, AgentZygote
from tests.support.chaos_server import ServerHost


@pytest.fixture(scope="session")
def chaos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHost]:
    host = ServerHost(tmp_path_factory.mktemp("chaos"))
    with host:
        host.start()
        yield host


@pytest.fixture(scope="session")
def agent_zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentZygote]:
    zygote = AgentZygote(tmp_path_factory.mktemp("agent-zygote") / "zygote.log")
    yield zygote
    zygote.close()


@pytest.fixture
def new_agent(chaos_server: ServerHost, agent_zygote: AgentZygote,
              tmp_path: Path) -> Iterator[Callable[..., AgentHost]]:
    made: list[AgentHost] = []

    def make(**kwargs: object) -> AgentHost:
        agent = AgentHost(tmp_path, f"c{secrets.token_hex(3)}", zygote=agent_zygote,
                          **kwargs)  # type: ignore[arg-type]
        chaos_server.start()  # whatever the previous test left, the server is up
        agent.enroll(chaos_server.url, chaos_server.token(), chaos_server.ca_file)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()

