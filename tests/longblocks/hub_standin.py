"""A small stand-in for the Hugging Face Hub's HTTP API, on loopback, for `publish` tests.

It serves the calls `HfApi.create_repo` and `HfApi.upload_folder` make (and `repo_info`),
keeping dataset repositories in memory as git would: every commit replaces the whole tree at
once, so a commit whose request never arrives in full changes nothing. Point a client at it
with `HF_ENDPOINT=http://127.0.0.1:<port>` (read when `huggingface_hub` is imported).

    POST /api/repos/create                             create (409 with the url if it exists)
    POST /api/validate-yaml                            the card's front matter must be a mapping
    GET  /api/datasets/<repo>/tree/<rev>               files: path, size, git blob oid
    GET  /api/datasets/<repo>/revision/<rev>           repo_info: head sha and files
    POST /api/datasets/<repo>/preupload/<rev>          every file "regular", with its remote oid
    POST /api/datasets/<repo>/commit/<rev>             ndjson: header, file (base64), deletedFile

Every file is a regular git blob (base64 in the commit). The real Hub stores binary files
through its Xet storage instead; that transfer path is not covered here.
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

REPO_PATH = re.compile(
    r"/api/datasets/(?P<repo>[^/]+/[^/]+)/(?P<action>tree|revision|preupload|commit)/(?P<rev>[^/?]+)"
)


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)  # commit shas, oldest first

    @property
    def head(self) -> str:
        return self.commits[-1] if self.commits else "0" * 40


class HubStandIn:
    """Start with `with HubStandIn(token) as hub:`; `hub.endpoint`, `hub.repos[repo_id].files`.

    `hub.interrupt_commit` (an Event pair) makes the next commit read half of its body, report
    it with `commit_half_read`, and wait for `resume_commit`: the test kills the client then.
    """

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []  # "METHOD path", in order
        self.interrupt_next_commit = False
        self.commit_half_read = threading.Event()
        self.resume_commit = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "HubStandIn":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.resume_commit.set()
        self._server.shutdown()
        self._server.server_close()

    # ---------------------------------------------------------------- API calls

    def create(self, body: dict) -> tuple[int, dict]:
        repo_id = (
            f"{body['organization'] or 'user'}/{body['name']}" if "/" not in body["name"] else body["name"]
        )
        url = f"{self.endpoint}/datasets/{repo_id}"
        if body.get("type") != "dataset":
            return 400, {"error": "this stand-in holds dataset repositories only"}
        with self._lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this dataset repo", "url": url}
            self.repos[repo_id] = Repo(private=body.get("visibility") == "private")
        return 200, {"url": url, "name": repo_id}

    def tree(self, repo: Repo) -> list[dict]:
        return [
            {"type": "file", "path": path, "size": len(data), "oid": git_blob_oid(data)}
            for path, data in sorted(repo.files.items())
        ]

    def preupload(self, repo: Repo, body: dict) -> dict:
        files = []
        for item in body["files"]:
            remote = repo.files.get(item["path"])
            oid = git_blob_oid(remote) if remote is not None else None
            files.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        return {"files": files}

    def commit(self, repo_id: str, repo: Repo, lines: list[dict]) -> tuple[int, dict]:
        files = dict(repo.files)  # applied to a copy: a commit lands whole or not at all
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    return 400, {"error": f"cannot delete {value['path']}: no such file"}
                del files[value["path"]]
            elif key == "deletedFolder":
                files = {p: d for p, d in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                return 400, {"error": f"unsupported commit operation {key!r}"}
        sha = hashlib.sha1(
            json.dumps([repo.head, sorted((p, git_blob_oid(d)) for p, d in files.items())]).encode()
        )
        with self._lock:
            repo.files = files
            repo.commits.append(sha.hexdigest())
        url = f"{self.endpoint}/datasets/{repo_id}/commit/{repo.head}"
        return 200, {"commitUrl": url, "commitOid": repo.head, "pullRequestUrl": None}


def _handler(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: tests read hub.requests instead
            pass

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def _route(self, method: str) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append(f"{method} {path}")
            if self.headers.get("authorization") != f"Bearer {hub.token}":
                return self._reply(401, {"error": "Invalid credentials in Authorization header"})
            if method == "POST" and path == "/api/repos/create":
                return self._reply(*hub.create(self._json()))
            if method == "POST" and path == "/api/validate-yaml":
                return self._validate_yaml(self._json())
            match = REPO_PATH.fullmatch(path)
            repo = hub.repos.get(match["repo"]) if match else None
            if repo is None:
                return self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            action = match["action"]
            if method == "GET" and action == "tree":
                return self._reply(200, hub.tree(repo))
            if method == "GET" and action == "revision":
                siblings = [{"rfilename": p} for p in sorted(repo.files)]
                return self._reply(200, {"id": match["repo"], "sha": repo.head, "siblings": siblings})
            if method == "POST" and action == "preupload":
                return self._reply(200, hub.preupload(repo, self._json()))
            if method == "POST" and action == "commit":
                body = self._commit_body()
                if body is None:
                    return None  # the client went away mid-request: nothing is committed
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                return self._reply(*hub.commit(match["repo"], repo, lines))
            return self._reply(404, {"error": f"no route for {method} {path}"})

        def _commit_body(self) -> bytes | None:
            length = int(self.headers["content-length"])
            if not hub.interrupt_next_commit:
                return self.rfile.read(length)
            hub.interrupt_next_commit = False
            half = self.rfile.read(length // 2)
            hub.commit_half_read.set()
            hub.resume_commit.wait(timeout=60)
            rest = self.rfile.read(length - len(half))
            if len(half) + len(rest) < length:
                self.close_connection = True
                return None
            return half + rest

        def _validate_yaml(self, body: dict) -> None:
            front = re.match(r"---\n(.*?)\n---\n", body["content"], re.S)
            metadata = yaml.safe_load(front.group(1)) if front else None
            if not isinstance(metadata, dict):
                return self._reply(400, {"errors": [{"message": "no YAML metadata block"}], "warnings": []})
            return self._reply(200, {"errors": [], "warnings": []})

        def _json(self):
            return json.loads(self.rfile.read(int(self.headers["content-length"])) or b"null")

        def _reply(self, status: int, payload, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
