"""A tiny stand-in for the Hugging Face Hub's HTTP API, enough for huggingface_hub's create_repo and
upload_folder (its single-commit path, HF_HUB_DISABLE_XET=1): every file is answered "regular" at preupload,
so the commit carries the files' bytes inline, and the server keeps what was committed.

Not a mock of huggingface_hub: the real client makes its real requests over HTTP to this server.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Hub:
    url: str = ""
    repos: list[dict] = field(default_factory=list)  # create_repo payloads
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo id -> path -> bytes
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Authorization
    fail_commit: bool = False


def serve(hub: Hub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?")[0]
            hub.requests.append(("POST", path, self.headers.get("Authorization")))
            parts = path.strip("/").split("/")
            if path == "/api/repos/create":
                payload = json.loads(body)
                hub.repos.append(payload)
                name = f"{payload.get('organization') or 'me'}/{payload['name']}"
                return self._reply(200, {"url": f"{hub.url}/datasets/{name}"})
            if path == "/api/validate-yaml":
                return self._reply(200, {})
            if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] == "preupload":
                files = json.loads(body)["files"]
                out = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return self._reply(200, {"files": out})
            if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] == "commit":
                if hub.fail_commit:
                    return self._reply(500, {"error": "the fake Hub refuses this commit"})
                repo = f"{parts[2]}/{parts[3]}"
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        value = item["value"]
                        hub.files.setdefault(repo, {})[value["path"]] = base64.b64decode(value["content"])
                url = f"{hub.url}/datasets/{repo}/commit/0123abcd"
                return self._reply(200, {"commitUrl": url, "commitOid": "0123abcd"})
            return self._reply(404, {"error": f"the fake Hub has no {path}"})

        def do_GET(self):  # noqa: N802
            hub.requests.append(("GET", self.path, self.headers.get("Authorization")))
            return self._reply(404, {"error": f"the fake Hub has no {self.path}"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server
