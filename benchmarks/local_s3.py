"""A real S3 API server on 127.0.0.1 for the tests and the loader benchmark: moto's standalone server (the one
s3fs's own test suite runs), in a child process on a free port, with one bucket.

    with LocalS3("spotmae") as s3:
        s3.url("shards")  # -> "s3://spotmae/shards"

While it runs, the standard AWS variables point every S3 client at it (s3fs, pyarrow, boto3; child processes
and Ray workers started meanwhile inherit them): AWS_ENDPOINT_URL, throwaway credentials, a region, and
AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE emptied so a user's ~/.aws cannot interfere. On exit the
variables are restored and the server is stopped (by its own pid) and waited for.
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
              "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
              "AWS_EC2_METADATA_DISABLED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalS3:
    def __init__(self, bucket: str = "spotmae", start_timeout_s: float = 60.0):
        self.bucket, self.start_timeout_s = bucket, start_timeout_s
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.secret = f"spotmae-test-secret-{secrets.token_hex(8)}"  # tests look for it in what was written
        self.process: subprocess.Popen | None = None
        self._saved: dict[str, str | None] = {}

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def __enter__(self) -> LocalS3:
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                         str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self._wait_until_up()
            self._set_environment()
            self.filesystem().mkdir(self.bucket)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved = {}
        _forget_s3_clients()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def filesystem(self):
        """A fresh s3fs filesystem for this server (no cached listings)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True)

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server on port {self.port} not up after {self.start_timeout_s} s")
                time.sleep(0.2)

    def _set_environment(self) -> None:
        self._saved = {name: os.environ.get(name) for name in _VARIABLES}
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(name, None)
        os.environ.update(AWS_ENDPOINT_URL=self.endpoint, AWS_ACCESS_KEY_ID="spotmae-test-key",
                          AWS_SECRET_ACCESS_KEY=self.secret, AWS_DEFAULT_REGION="us-east-1",
                          AWS_REGION="us-east-1", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
                          AWS_EC2_METADATA_DISABLED="true")
        _forget_s3_clients()


def _forget_s3_clients() -> None:
    """Drop s3fs's cached filesystems: they hold the endpoint and credentials they were made with."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
