"""Uploads a file with tuspy, the Python tus client, as a mobile app would.

usage: tus_upload.py ENDPOINT TOKEN FILE CHUNK_SIZE [METADATA_JSON]
METADATA_JSON replaces the default Upload-Metadata (a JSON object of
strings). Prints the upload URL on success; exits non-zero on any failure.
"""
import json
import sys

from tusclient import client


def main() -> None:
    endpoint, token, path, chunk_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    tus = client.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"})
    metadata = {"filename": "clip.mp4", "filetype": "video/mp4", "title": "A test clip"}
    if len(sys.argv) > 5:
        metadata = json.loads(sys.argv[5])
    uploader = tus.uploader(
        path,
        chunk_size=chunk_size,
        metadata=metadata,
        retries=3,
        retry_delay=1,
    )
    uploader.upload()
    print(uploader.url)


if __name__ == "__main__":
    main()
