# The spec's "Get Settings" example (spec/multi-tenancy.txt), re-indented.
# Only the base URL, the admin key and the tenant id come from the
# environment.
import os

BASE = os.environ["SYNAPSEX_BASE"]              # the spec: https://api.synapsex.ai/v1
ADMIN_KEY = os.environ["SYNAPSEX_ADMIN_KEY"]    # the spec: sk-admin-xxx
TENANT_ID = os.environ["SYNAPSEX_TENANT_ID"]    # the spec: tenant_abc

import requests

response = requests.get(
    f"{BASE}/tenants/{TENANT_ID}/settings",
    headers={"Authorization": f"Bearer {ADMIN_KEY}"}
)

settings = response.json()
print(f"Model: {settings['default_model']}")
print(f"Rerank: {settings['rerank_tier']}")
