"""OTLP/HTTP in, Zipkin v2 out: lets the local Zipkin (deploy/local/tracing.sh) receive the
spans the services export with OTEL_EXPORTER_OTLP_ENDPOINT.

Zipkin's server has no OTLP receiver of its own on Maven Central, so this small bridge
accepts `POST /v1/traces` (protobuf, optionally gzip'd, as the OpenTelemetry SDKs send
it), translates each span as OpenTelemetry's Zipkin exporter specification describes
(ids in hex, kind, microsecond times, attributes and resource attributes as tags, events
as annotations, status as `otel.status_code`/`error`), and posts the batch to Zipkin's
`/api/v2/spans`. `GET /health` answers 200 while Zipkin does.

    python otlp_zipkin_bridge.py --listen 127.0.0.1:4318 --zipkin http://127.0.0.1:9411
"""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import json
import sys
import urllib.error
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

KINDS = {
    Span.SPAN_KIND_SERVER: "SERVER",
    Span.SPAN_KIND_CLIENT: "CLIENT",
    Span.SPAN_KIND_PRODUCER: "PRODUCER",
    Span.SPAN_KIND_CONSUMER: "CONSUMER",
}
MAX_BODY = 64 * 1024 * 1024


def plain(value: AnyValue) -> object:
    """An OTLP AnyValue as a plain Python value."""
    field = value.WhichOneof("value")
    if field is None:
        return None
    if field == "array_value":
        return [plain(v) for v in value.array_value.values]
    if field == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    if field == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, field)


def tag(value: AnyValue) -> str:
    """Zipkin tags are strings: booleans lower-case, arrays and maps as JSON."""
    v = plain(value)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return "" if v is None else str(v)


def attrs(kvs: list[KeyValue]) -> dict[str, str]:
    return {kv.key: tag(kv.value) for kv in kvs}


def endpoint(tags: dict[str, str]) -> dict | None:
    """The remote side of a client/producer span, from the semantic-convention attributes."""
    out: dict[str, object] = {}
    if tags.get("peer.service"):
        out["serviceName"] = tags["peer.service"]
    host = tags.get("server.address") or tags.get("net.peer.name")
    port = tags.get("server.port") or tags.get("net.peer.port")
    if host:
        try:
            out["ipv6" if ipaddress.ip_address(host).version == 6 else "ipv4"] = host
        except ValueError:
            out.setdefault("serviceName", host)
    if port and port.isdigit():
        out["port"] = int(port)
    return out or None


def to_zipkin(request: ExportTraceServiceRequest) -> list[dict]:
    spans = []
    for rs in request.resource_spans:
        resource = attrs(rs.resource.attributes)
        service = resource.pop("service.name", "unknown_service")
        for ss in rs.scope_spans:
            for s in ss.spans:
                tags = {**resource, **attrs(s.attributes)}
                if ss.scope.name:
                    tags["otel.scope.name"] = ss.scope.name
                if ss.scope.version:
                    tags["otel.scope.version"] = ss.scope.version
                if s.status.code == Status.STATUS_CODE_ERROR:
                    tags["otel.status_code"] = "ERROR"
                    tags["error"] = s.status.message
                elif s.status.code == Status.STATUS_CODE_OK:
                    tags["otel.status_code"] = "OK"
                z: dict[str, object] = {
                    "traceId": s.trace_id.hex(),
                    "id": s.span_id.hex(),
                    "name": s.name,
                    "timestamp": s.start_time_unix_nano // 1000,
                    "duration": max(1, (s.end_time_unix_nano - s.start_time_unix_nano) // 1000),
                    "localEndpoint": {"serviceName": service},
                    "tags": tags,
                }
                if s.parent_span_id:
                    z["parentId"] = s.parent_span_id.hex()
                if s.kind in KINDS:
                    z["kind"] = KINDS[s.kind]
                if s.kind in (Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_PRODUCER) and (remote := endpoint(tags)):
                    z["remoteEndpoint"] = remote
                if s.events:
                    z["annotations"] = [
                        {
                            "timestamp": e.time_unix_nano // 1000,
                            "value": e.name
                            + (f": {json.dumps(attrs(e.attributes), separators=(',', ':'))}" if e.attributes else ""),
                        }
                        for e in s.events
                    ]
                spans.append(z)
    return spans


class Bridge(BaseHTTPRequestHandler):
    zipkin = "http://127.0.0.1:9411"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: object) -> None:  # one line per failure only
        pass

    def _answer(self, code: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path != "/health":
            return self._answer(404, b"not found\n")
        try:
            with urllib.request.urlopen(f"{self.zipkin}/health", timeout=2) as r:
                ok = r.status == 200
        except (OSError, urllib.error.URLError):
            ok = False
        self._answer(200 if ok else 503, b"ok\n" if ok else b"zipkin is not answering\n")

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/traces":
            return self._answer(404, b"only /v1/traces (spans) is bridged\n")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._answer(413, b"too large\n")
        body = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if "protobuf" not in (self.headers.get("Content-Type") or ""):
                return self._answer(415, b"send application/x-protobuf (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)\n")
            request = ExportTraceServiceRequest.FromString(body)
        except Exception as exc:  # a malformed export is the sender's error, never a crash
            return self._answer(400, f"cannot decode: {exc}\n".encode())
        spans = to_zipkin(request)
        if spans:
            post = urllib.request.Request(
                f"{self.zipkin}/api/v2/spans",
                data=json.dumps(spans).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(post, timeout=10):
                    pass
            except (OSError, urllib.error.URLError) as exc:
                print(f"otlp-zipkin-bridge: zipkin refused {len(spans)} spans: {exc!r}", file=sys.stderr, flush=True)
                return self._answer(503, b"zipkin unavailable\n")  # the exporter retries 503
        self._answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:4318", help="host:port for OTLP/HTTP")
    parser.add_argument("--zipkin", default="http://127.0.0.1:9411", help="Zipkin's base URL")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    Bridge.zipkin = args.zipkin.rstrip("/")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Bridge)
    server.daemon_threads = True
    print(
        f"otlp-zipkin-bridge: OTLP/HTTP on http://{args.listen}/v1/traces -> {Bridge.zipkin}/api/v2/spans", flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
