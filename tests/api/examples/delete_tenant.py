# The spec's "Delete Tenant" example (spec/multi-tenancy.txt), re-indented.
# Only the base URL, the admin key and the tenant id come from the
# environment.
import os

BASE = os.environ["SYNAPSEX_BASE"]              # the spec: https://api.synapsex.ai/v1
ADMIN_KEY = os.environ["SYNAPSEX_ADMIN_KEY"]    # the spec: sk-admin-xxx
TENANT_ID = os.environ["SYNAPSEX_TENANT_ID"]    # the spec: tenant_abc123

import requests

response = requests.delete(
    f"{BASE}/tenants/{TENANT_ID}",
    headers={"Authorization": f"Bearer {ADMIN_KEY}"}
)
