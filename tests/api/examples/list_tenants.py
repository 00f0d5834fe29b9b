# The spec's "List Tenants" example (spec/multi-tenancy.txt), re-indented.
# Only the base URL and the admin key come from the environment.
import os

BASE = os.environ["SYNAPSEX_BASE"]              # the spec: https://api.synapsex.ai/v1
ADMIN_KEY = os.environ["SYNAPSEX_ADMIN_KEY"]    # the spec: sk-admin-xxx

import requests

response = requests.get(
    f"{BASE}/tenants",
    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    params={"tier": "pro", "limit": 50}
)

for tenant in response.json()['tenants']:
    print(f"{tenant['name']} ({tenant['slug']}): {tenant['tier']}")
