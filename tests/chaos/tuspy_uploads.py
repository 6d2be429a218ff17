"""Uploads files with tuspy (the Python tus client) the way an app does:
each in its own thread, in chunks, and after any failure it waits, asks the
server where to resume (HEAD) and goes on, until the upload is whole, the
server says it is gone, or the deadline passes.

    python3 tuspy_uploads.py spec.json

spec.json: {"endpoint": "http://…/files/", "token": "…", "deadline_secs": n,
            "uploads": [{"path": "…", "chunk_size": n, "checksum": bool,
                         "pause_ms": n, "start_ms": n}]}
Prints one JSON line per upload: {"path", "id", "ok", "error",
"regressed"}: `regressed` is how many bytes the server once acknowledged
(a PATCH's Upload-Offset) and a later HEAD asked for again (0 unless an
acknowledged byte was lost).
"""

import json
import sys
import threading
import time

from tusclient import client
from tusclient.exceptions import TusCommunicationError


def upload(spec, item, out, lock):
    # Apps start their uploads at different moments.
    time.sleep(item["start_ms"] / 1000)
    tus = client.TusClient(spec["endpoint"], headers={"Authorization": "Bearer " + spec["token"]})
    deadline = time.monotonic() + spec["deadline_secs"]
    uploader = None
    error = None
    pause = 0.5
    acked = 0
    regressed = 0
    while time.monotonic() < deadline:
        try:
            if uploader is None:
                uploader = tus.uploader(
                    item["path"],
                    chunk_size=item["chunk_size"],
                    metadata={"filename": item["path"].rsplit("/", 1)[-1]},
                    upload_checksum=item["checksum"],
                )
            elif uploader.url:
                # Where the server says the upload stands.
                uploader.offset = uploader.get_offset()
                regressed = max(regressed, acked - uploader.offset)
            if not uploader.url:
                uploader.set_url(uploader.create_url())
                uploader.offset = 0
            size = uploader.get_file_size()
            uploader.stop_at = size
            while uploader.offset < size:
                # A phone's pace: a pause between chunks.
                time.sleep(item["pause_ms"] / 1000)
                uploader.upload_chunk()
                acked = max(acked, uploader.offset)
            error = None
            break
        except TusCommunicationError as e:
            error = f"{e.status_code}: {e}"
            if e.status_code in (404, 410) and uploader is not None and uploader.url:
                break  # the server says the upload is gone (failed)
        except Exception as e:  # a broken connection, a refused one
            error = repr(e)
        time.sleep(pause)
        pause = min(pause * 2, 4.0)
    url = uploader.url if uploader is not None else None
    with lock:
        out.write(json.dumps({
            "path": item["path"],
            "id": url.rstrip("/").rsplit("/", 1)[-1] if url else None,
            "ok": error is None,
            "error": error,
            "regressed": regressed,
        }) + "\n")
        out.flush()


def main():
    spec = json.load(open(sys.argv[1]))
    lock = threading.Lock()
    threads = [
        threading.Thread(target=upload, args=(spec, item, sys.stdout, lock))
        for item in spec["uploads"]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
