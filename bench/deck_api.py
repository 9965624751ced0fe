"""The dashboard's REST API for the bench scripts (standard library only): a logged-in
admin session, and one command run to its end, polled every 5 ms in this process so that
a figure holds no process start-ups."""

import json
import time
import urllib.error
import urllib.request


class Deck:
    def __init__(self, url, password):
        self.url = url
        self.auth = {}
        headers, login = self.request(
            "POST", "/api/login", {"username": "admin", "password": password})
        self.auth = {"Cookie": headers["Set-Cookie"].split(";", 1)[0],
                     "X-CSRF-Token": login["csrf_token"]}

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Origin", self.url)
        for k, v in self.auth.items():
            req.add_header(k, v)
        with urllib.request.urlopen(req) as resp:
            return resp.headers, json.loads(resp.read() or b"null")

    def run(self, host, command):
        """Start `command` on `host` (waiting while the host is busy with the last one)
        and poll it to its end; the command's detail."""
        while True:
            try:
                _, accepted = self.request(
                    "POST", f"/api/hosts/{host}/commands", {"command": command})
                break
            except urllib.error.HTTPError as e:
                if e.code != 409:  # busy: the last one's end not seen by the dashboard yet
                    raise
                time.sleep(0.005)
        while True:
            _, detail = self.request("GET", f"/api/commands/{accepted['command_id']}")
            if detail["status"] not in ("pending", "queued", "running"):
                return detail
            time.sleep(0.005)
