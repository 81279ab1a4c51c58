"""Google Cloud Storage emulator for flotilla's tests.

gcp-storage-emulator, plus what real GCS's XML API sends on object reads and
writes that the emulator leaves out and object_store depends on: the
object's `ETag` and `Last-Modified` headers (object_store refuses a response
without them) and `x-goog-generation`; and the XML API's percent-decoding of
`/<bucket>/<object>` paths (object_store encodes every `/` and `-` of a key).

    python gcs_server.py --host 127.0.0.1 --port PORT
"""

import argparse
import datetime
import email.utils
import urllib.parse

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _object_headers(request, response, storage):
    try:
        obj = storage.get_file_obj(
            request.params["bucket_name"], request.params["object_id"]
        )
    except NotFound:
        return
    response["ETag"] = '"{}"'.format(obj["etag"])
    updated = datetime.datetime.fromisoformat(obj["updated"].replace("Z", "+00:00"))
    response["Last-Modified"] = email.utils.format_datetime(updated, usegmt=True)
    response["x-goog-generation"] = str(obj["generation"])


def _with_headers(handler):
    def wrapped(request, response, storage, *args, **kwargs):
        handler(request, response, storage, *args, **kwargs)
        if int(response.status) < 300:
            _object_headers(request, response, storage)

    return wrapped


_JSON_API = ("/storage/", "/upload/", "/download/", "/batch/", "/b/")
_path = server.Request.path.fget


def _decoded_path(request):
    path = _path(request)
    if path.startswith(_JSON_API):
        return path
    return urllib.parse.unquote(path)


server.Request.path = property(_decoded_path)

for _, methods in server.HANDLERS:
    for method, handler in list(methods.items()):
        if handler in (objects.download, objects.xml_upload):
            methods[method] = _with_headers(handler)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server.create_server(args.host, args.port, in_memory=True).run()


if __name__ == "__main__":
    main()
