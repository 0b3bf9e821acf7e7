"""The stock Python gRPC tools against a running Strongbox, as a person
would use them: the health checker, the reflection client (which speaks
only grpc.reflection.v1alpha), and stubs generated from proto/ with
grpc_tools.protoc running the quickstart flow.

Usage: smoke.py HOST:PORT OPERATOR_KEY PROTO_DIR OUT_DIR
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_tools import protoc

target, operator_key, proto_dir, out_dir = sys.argv[1:5]
channel = grpc.insecure_channel(target)

# 1. Health, with the stock checker.
health = health_pb2_grpc.HealthStub(channel)
for service in ["", "strongbox.v1.RecordService"]:
    status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
    assert status == health_pb2.HealthCheckResponse.SERVING, (service, status)
print("health: SERVING")

# 2. Reflection (v1alpha, all grpcio-reflection speaks).
services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
for wanted in ["strongbox.v1.RecordService", "strongbox.v1.TenantService"]:
    assert wanted in services, services
print("reflection:", len(services), "services")

# 3. Stubs from proto/, and the quickstart flow.
rc = protoc.main(
    [
        "grpc_tools.protoc",
        "-I" + proto_dir,
        "--python_out=" + out_dir,
        "--grpc_python_out=" + out_dir,
        proto_dir + "/strongbox/v1/strongbox.proto",
    ]
)
assert rc == 0, rc
sys.path.insert(0, out_dir)
from strongbox.v1 import strongbox_pb2 as pb  # noqa: E402
from strongbox.v1 import strongbox_pb2_grpc as rpc  # noqa: E402


def auth(key):
    return [("authorization", "Bearer " + key), ("x-strongbox-purpose", "python smoke test")]


op = auth(operator_key)
rpc.TenantServiceStub(channel).CreateTenant(pb.CreateTenantRequest(tenant="acme", name="Acme"), metadata=op)
principals = rpc.PrincipalServiceStub(channel)
admin = principals.CreatePrincipal(
    pb.CreatePrincipalRequest(tenant="acme", name="admin", roles=["admin"]), metadata=op
).api_key
app = principals.CreatePrincipal(
    pb.CreatePrincipalRequest(tenant="acme", name="app", roles=["writer", "reader"]),
    metadata=auth(admin),
).api_key
records = rpc.RecordServiceStub(channel)
records.PutRecord(
    pb.PutRecordRequest(
        tenant="acme", subject="alice@example.com", category="contact", key="email",
        value=b"alice@example.com",
    ),
    metadata=auth(app),
)
got = records.GetRecord(
    pb.GetRecordRequest(tenant="acme", subject="alice@example.com", category="contact", key="email"),
    metadata=auth(app),
)
assert got.value == b"alice@example.com", got
try:
    records.GetRecord(
        pb.GetRecordRequest(tenant="acme", subject="bob", category="contact", key="email"),
        metadata=auth(app),
    )
    raise AssertionError("a missing record was found")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
print("quickstart: ok")
