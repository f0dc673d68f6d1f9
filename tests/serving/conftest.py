import pytest

from serving.mock_server import MockConfig, MockServer


@pytest.fixture
def mock_server():
    """A factory: mock_server(MockConfig(...)) starts a server that stops after the test."""
    started = []

    def start(config: MockConfig | None = None) -> MockServer:
        srv = MockServer(config or MockConfig()).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
