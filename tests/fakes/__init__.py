"""In-memory fakes of sourceflow's ports, one module per port, for every tier (STYLE.md habit
9: fakes over mocks). Import them from here: `from tests.fakes import FakeSink`.

- aws: `client_error`, what botocore raises when an API answers with an error code
- callbacks: `FakeCallbacks`, Step Functions' task callbacks
- connectors: `FakeConnector`, `WindowedSource`, `FakeConnectionCheck`, `landed` (a
  connector's records without its check-ins)
- heartbeat: `FakeClock`, `FakeTask`, `quiet_heartbeat`, download's heartbeat ports
- http: `serve_in_memory`, an HTTP request handler served without a socket
- pacing: `FakePacing`, how a connector waits on a vendor and holds its slot
- queues: `FakeVisibility`, `FailureLog`, what the SQS consumer shell reports to
- s3: `FakeS3`, S3 as a connector lists and reads it
- secrets: `FakeSecretsManager`, `fake_access` (a connector's SourceAccess), `source_secret`
- sink: `FakeSink`, download's raw-bucket writer

Builders of messages and records live in tests/builders.py.
"""

from tests.fakes.aws import client_error
from tests.fakes.callbacks import FakeCallbacks
from tests.fakes.connectors import FakeConnectionCheck, FakeConnector, WindowedSource, landed
from tests.fakes.heartbeat import FakeClock, FakeTask, quiet_heartbeat
from tests.fakes.http import serve_in_memory
from tests.fakes.pacing import FakePacing
from tests.fakes.queues import FailureLog, FakeVisibility
from tests.fakes.s3 import FakeS3
from tests.fakes.secrets import FakeSecretsManager, fake_access, source_secret
from tests.fakes.sink import FakeSink

__all__ = [
    "FailureLog",
    "FakeCallbacks",
    "FakeClock",
    "FakeConnectionCheck",
    "FakeConnector",
    "FakePacing",
    "FakeS3",
    "FakeSecretsManager",
    "FakeSink",
    "FakeTask",
    "FakeVisibility",
    "WindowedSource",
    "client_error",
    "fake_access",
    "landed",
    "quiet_heartbeat",
    "serve_in_memory",
    "source_secret",
]
