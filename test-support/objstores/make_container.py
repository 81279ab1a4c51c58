"""Creates a blob container in Azurite with its well-known development
account (a signed request, as Azure requires), unless it exists.

    python make_container.py BLOB_ENDPOINT CONTAINER
"""

import sys

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

# Azurite's published development account and key (not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

endpoint, container = sys.argv[1], sys.argv[2]
client = BlobServiceClient(
    account_url=endpoint, credential={"account_name": ACCOUNT, "account_key": KEY}
)
try:
    client.create_container(container)
except ResourceExistsError:
    pass
