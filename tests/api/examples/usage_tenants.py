# The spec's "All Tenants Usage" example (spec/multi-tenancy.txt),
# re-indented. Only the base URL and the admin key come from the environment.
import os

BASE = os.environ["SYNAPSEX_BASE"]              # the spec: https://api.synapsex.ai/v1
ADMIN_KEY = os.environ["SYNAPSEX_ADMIN_KEY"]    # the spec: sk-admin-xxx

import requests

response = requests.get(
    f"{BASE}/admin/usage/tenants",
    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    params={"period": "current_month", "sort": "tokens_desc"}
)

for tenant in response.json()['tenants']:
    print(f"{tenant['name']}: {tenant['tokens']:,} tokens")
