"""A keyless flood for measuring: as many calls with a bad API key as one
Python process makes, for SECONDS. Run with target/pyenv/bin/python:
    scripts/flood.py 127.0.0.1:50051 12
(docs/performance.md, "A keyless flood").
"""
import sys, time, grpc
target, secs = sys.argv[1], float(sys.argv[2])
ch = grpc.insecure_channel(target)
call = ch.unary_unary('/strongbox.v1.TenantService/ListTenants',
                      request_serializer=lambda x: x, response_deserializer=lambda x: x)
md = [('authorization', 'Bearer sbk_0123456789abcdef_notarealsecretnotarealsecretxx')]
end = time.time() + secs
sent = 0
pending = []
while time.time() < end:
    pending.append(call.future(b'', metadata=md))
    sent += 1
    if len(pending) >= 64:
        for f in pending:
            try: f.result()
            except grpc.RpcError: pass
        pending = []
for f in pending:
    try: f.result()
    except grpc.RpcError: pass
print("flood calls", sent, "per s", int(sent / secs))
